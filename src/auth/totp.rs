//! TOTP (RFC 6238) as every authenticator app implements it: HMAC-SHA1, 6 digits, 30 s steps,
//! 160-bit keys from the OS CSPRNG. The proxy accepts each step once per user (the caller claims
//! the step in the store); this module only computes and compares.

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use totp_rs::{Algorithm, Builder};

use crate::secrets::random_bytes;

/// RFC 4226 section 4 recommends 160-bit shared secrets.
pub const SECRET_BYTES: usize = 20;
pub const DIGITS: usize = 6;
pub const STEP_SECONDS: u64 = 30;

pub fn new_secret() -> [u8; SECRET_BYTES] {
    random_bytes()
}

fn totp(secret: &[u8], skew: u8) -> Option<totp_rs::Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_step_duration(STEP_SECONDS)
        .with_skew(u16::from(skew))
        .with_secret(secret.to_vec())
        .build()
        .ok()
}

/// The time step a code matches within ±`skew` steps of `now`, if any. Constant-time compare.
pub fn check(secret: &[u8], code: &TotpCode, now: u64, skew: u8) -> Option<u64> {
    totp(secret, skew)?.check(code.as_str(), now)
}

/// The code for the step containing `time` (tests and the load generator).
pub fn code_at(secret: &[u8], time: u64) -> String {
    totp(secret, 0)
        .map(|t| t.generate(time).to_string())
        .unwrap_or_default()
}

/// A code as a user typed it, reduced to its digits: pasted spaces and dashes are ignored.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode(String);

impl TotpCode {
    pub fn parse(input: &str) -> Option<Self> {
        let digits: String = input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(Self(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpCode(<redacted>)")
    }
}

/// Unpadded RFC 4648 Base32, as authenticator apps expect it.
pub fn base32(secret: &[u8]) -> String {
    totp_rs::Secret::from(secret.to_vec())
        .to_base32()
        .trim_end_matches('=')
        .to_owned()
}

/// The key in groups of four for typing by hand ("Can't scan?").
pub fn grouped(base32: &str) -> String {
    base32
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Key Uri Format: `otpauth://totp/Issuer:account?secret=...&issuer=Issuer`. Neither name may
/// contain ':' (it separates them in the label), so colons become spaces.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let issuer = issuer.replace(':', " ").trim().to_owned();
    let account = account.replace(':', " ").trim().to_owned();
    let built = Builder::new()
        .with_secret(secret.to_vec())
        .with_issuer(Some(issuer.clone()))
        .with_account_name(account.clone())
        .build()
        .and_then(|t| t.to_url());
    match built {
        Ok(uri) => uri,
        // Only reachable with an empty account name; still produce a usable URI.
        Err(_) => format!(
            "otpauth://totp/{issuer}?secret={}&issuer={issuer}",
            base32(secret)
        ),
    }
}

/// The otpauth URI as an inline SVG QR code (no XML prolog, ready to embed in HTML).
pub fn qr_svg(uri: &str) -> String {
    let Ok(code) = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M) else {
        return String::new();
    };
    let svg = code
        .render::<svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    match svg.find("<svg") {
        Some(start) => svg[start..].to_owned(),
        None => svg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, 8 digits, all three algorithms.
    #[test]
    fn rfc6238_appendix_b() {
        let sha1 = b"12345678901234567890".to_vec();
        let sha256 = b"12345678901234567890123456789012".to_vec();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".to_vec();
        let vectors: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        let eight = |alg, secret: &Vec<u8>, t| {
            Builder::new()
                .with_algorithm(alg)
                .with_digits(8)
                .with_secret(secret.clone())
                .build()
                .unwrap()
                .generate(t)
                .to_string()
        };
        for (t, a, b, c) in vectors {
            assert_eq!(eight(Algorithm::SHA1, &sha1, t), a, "SHA1 at {t}");
            assert_eq!(eight(Algorithm::SHA256, &sha256, t), b, "SHA256 at {t}");
            assert_eq!(eight(Algorithm::SHA512, &sha512, t), c, "SHA512 at {t}");
        }
    }

    /// RFC 4226 Appendix D: HOTP counters 0..9 are TOTP steps 0..9 with a 30 s step.
    #[test]
    fn rfc4226_appendix_d() {
        let secret = b"12345678901234567890";
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(
                code_at(secret, counter as u64 * 30),
                *want,
                "counter {counter}"
            );
        }
    }

    #[test]
    fn skew_edges() {
        let secret = [7u8; 20];
        let now = 1_700_000_000u64 - (1_700_000_000 % 30) + 15; // mid-step
        let step = now / 30;
        let code = |t| TotpCode::parse(&code_at(&secret, t)).unwrap();
        assert_eq!(check(&secret, &code(now), now, 1), Some(step));
        assert_eq!(check(&secret, &code(now - 30), now, 1), Some(step - 1));
        assert_eq!(check(&secret, &code(now + 30), now, 1), Some(step + 1));
        assert_eq!(
            check(&secret, &code(now - 60), now, 1),
            None,
            "two steps old"
        );
        assert_eq!(
            check(&secret, &code(now + 60), now, 1),
            None,
            "two steps ahead"
        );
        assert_eq!(check(&secret, &code(now - 30), now, 0), None, "skew 0");
        // The last second of a step and the first of the next.
        let edge = (step + 1) * 30;
        assert_eq!(check(&secret, &code(edge - 1), edge, 0), None);
        assert_eq!(check(&secret, &code(edge - 1), edge, 1), Some(step));
    }

    #[test]
    fn codes_are_parsed_leniently_but_strictly() {
        assert_eq!(TotpCode::parse(" 123 456 ").unwrap().as_str(), "123456");
        assert_eq!(TotpCode::parse("123-456").unwrap().as_str(), "123456");
        for bad in ["12345", "1234567", "12a456", "", "１２３４５６"] {
            assert!(TotpCode::parse(bad).is_none(), "{bad:?}");
        }
        assert!(!format!("{:?}", TotpCode::parse("123456").unwrap()).contains("123456"));
    }

    #[test]
    fn otpauth_uri_follows_the_key_uri_format() {
        let secret = b"12345678901234567890";
        let uri = otpauth_uri(secret, "DCKAP Integrator", "alice@example.com");
        assert!(
            uri.starts_with("otpauth://totp/DCKAP%20Integrator:alice%40example.com?"),
            "{uri}"
        );
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{uri}"
        );
        assert!(uri.contains("issuer=DCKAP%20Integrator"), "{uri}");
        assert!(!uri.contains('='.to_string().repeat(2).as_str()));
        let colon = otpauth_uri(secret, "Acme: Books", "a:b");
        assert!(
            colon.starts_with("otpauth://totp/Acme%20%20Books:a%20b?"),
            "{colon}"
        );
    }

    #[test]
    fn keys_are_160_bits_and_random() {
        let a = new_secret();
        assert_eq!(a.len(), 20);
        assert_ne!(a, new_secret());
        assert_eq!(base32(&a).len(), 32);
        assert_eq!(grouped("ABCDEFGHIJ"), "ABCD EFGH IJ");
    }

    #[test]
    fn qr_is_inline_svg() {
        let svg = qr_svg("otpauth://totp/A:b?secret=ABC&issuer=A");
        assert!(svg.starts_with("<svg"));
        assert!(!svg.contains("<?xml"));
    }
}
