//! Recovery codes: shown once at enrollment, stored as keyed hashes, each usable once.
//! 16 characters from a 31-letter alphabet without look-alikes: about 79 bits each.

use crate::secrets::random_below;

const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const LEN: usize = 16;

/// A fresh code, formatted for reading: `xxxx-xxxx-xxxx-xxxx`.
pub fn generate() -> String {
    let raw: Vec<u8> = (0..LEN)
        .map(|_| ALPHABET[random_below(ALPHABET.len() as u64) as usize])
        .collect();
    raw.chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// A code as typed, in the form it is hashed: lower case, without dashes or spaces.
pub fn normalize(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (code.len() == LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_differ() {
        let code = generate();
        assert_eq!(code.len(), 19);
        assert_eq!(normalize(&code).unwrap().len(), 16);
        assert_eq!(normalize(&code.to_uppercase()), normalize(&code));
        assert_eq!(normalize(&code.replace('-', " ")), normalize(&code));
        assert_ne!(generate(), generate());
        // log2(31) * 16 > 64 bits (OWASP / SPEC: at least 64).
        assert!((ALPHABET.len() as f64).log2() * LEN as f64 > 64.0);
    }

    #[test]
    fn junk_is_refused() {
        for bad in ["", "abcd", "0000-0000-0000-0000", "abcd-efgh-jkmn-pqrst"] {
            assert!(normalize(bad).is_none(), "{bad:?}");
        }
    }
}
