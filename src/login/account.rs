//! The account name as it keys everything (2FA records, lockouts, sessions): one key for every
//! spelling that some app could treat as the same account.
//!
//! Apps fold names in different ways: Django applies NFKC, ASP.NET Identity upper-cases, most
//! apps lower-case, Go's `EqualFold` uses Unicode simple case folding, Java's case mapping
//! depends on the locale (Turkish dotless i). If the proxy folded less than the app, `ａｌｉｃｅ`
//! (fullwidth) would reach alice's account without her second factor. Folding *more* than an
//! app is safe (two app accounts share one 2FA record key, which only ever asks for more).
//!
//! - ASCII mode (the default): names must be printable ASCII; letter case is folded unless the
//!   app's names are case-sensitive. Anything else is refused at the login watcher.
//! - Unicode mode (`app.username_unicode = true`): NFKC, then full upper-casing and full
//!   lower-casing (so `ß`/`SS`, `ſ`/`s`, the Kelvin sign, ligatures and final sigma meet their
//!   plain forms), Turkish dotted and dotless i folded to `i`, then NFKC again.
//!
//! In both modes a name is refused if it is empty, longer than 256 bytes, or contains controls,
//! `;`, `&` or `=` (legacy form parsers split there: `username=alice;x=1` is `alice` to them), or,
//! in Unicode mode, format and other default-ignorable characters (zero-width spaces and
//! joiners, bidi controls, variation selectors, soft hyphen), which apps may strip.

use unicode_normalization::UnicodeNormalization;

/// How the app compares account names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRules {
    pub case_sensitive: bool,
    pub unicode: bool,
}

/// Why a name cannot key an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    /// Not ASCII, and Unicode mode is off.
    NotAscii,
    /// A control, format or separator character.
    Forbidden,
}

const MAX_NAME_BYTES: usize = 256;

/// The canonical key for `raw`, or why there is none.
pub fn canonical(raw: &str, rules: NameRules) -> Result<String, NameError> {
    let name = if rules.unicode {
        if raw.chars().any(forbidden_unicode) {
            return Err(NameError::Forbidden);
        }
        let compat: String = raw.nfkc().collect();
        let trimmed = compat.trim();
        if rules.case_sensitive {
            trimmed.to_owned()
        } else {
            fold_unicode(trimmed)
        }
    } else {
        if !raw.is_ascii() {
            return Err(NameError::NotAscii);
        }
        let trimmed = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        if rules.case_sensitive {
            trimmed.to_owned()
        } else {
            trimmed.to_ascii_lowercase()
        }
    };
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    // Checked again after folding: compatibility forms can become separators (`﹔` is `;`).
    if name
        .chars()
        .any(|c| forbidden_ascii(c) || forbidden_unicode(c))
    {
        return Err(NameError::Forbidden);
    }
    Ok(name)
}

fn forbidden_ascii(c: char) -> bool {
    c.is_control() || matches!(c, ';' | '&' | '=')
}

/// Controls, separators and Unicode's default-ignorable code points (DerivedCoreProperties),
/// which renderers hide and some apps strip before comparing.
fn forbidden_unicode(c: char) -> bool {
    forbidden_ascii(c)
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}'
            | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Upper then lower case (full mappings), Turkish i folded, NFKC again: the finest key that
/// every lower-casing, upper-casing or case-folding app maps its equal names to.
fn fold_unicode(name: &str) -> String {
    let cased = name.to_uppercase().to_lowercase();
    let mut out = String::with_capacity(cased.len());
    let mut chars = cased.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // Dotless i, and the dot a lower-cased `İ` leaves after its i.
            'ı' => out.push('i'),
            'i' if chars.peek() == Some(&'\u{0307}') => {
                chars.next();
                out.push('i');
            }
            c => out.push(c),
        }
    }
    out.nfkc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASCII: NameRules = NameRules {
        case_sensitive: false,
        unicode: false,
    };
    const UNICODE: NameRules = NameRules {
        case_sensitive: false,
        unicode: true,
    };

    #[test]
    fn ascii_mode_folds_case_and_refuses_the_rest() {
        for (raw, key) in [
            ("alice", "alice"),
            ("ALICE", "alice"),
            (" Alice\t", "alice"),
            ("Alice@Example.com", "alice@example.com"),
            ("o'brien+x", "o'brien+x"),
        ] {
            assert_eq!(canonical(raw, ASCII).as_deref(), Ok(key), "{raw:?}");
        }
        for (raw, err) in [
            ("ａｌｉｃｅ", NameError::NotAscii),
            ("alİce", NameError::NotAscii),
            ("al\u{200B}ice", NameError::NotAscii),
            ("alice;x=1", NameError::Forbidden),
            ("alice&x", NameError::Forbidden),
            ("a=b", NameError::Forbidden),
            ("al\u{0}ice", NameError::Forbidden),
            ("al\x7fice", NameError::Forbidden),
            ("   ", NameError::Empty),
            ("", NameError::Empty),
        ] {
            assert_eq!(canonical(raw, ASCII), Err(err), "{raw:?}");
        }
        assert_eq!(canonical(&"a".repeat(257), ASCII), Err(NameError::TooLong));
        let sensitive = NameRules {
            case_sensitive: true,
            unicode: false,
        };
        assert_eq!(canonical("Alice", sensitive).as_deref(), Ok("Alice"));
    }

    /// Each row: spellings that some app reads as one account, so they must share a key.
    #[test]
    fn unicode_mode_merges_what_any_app_merges() {
        for group in [
            &[
                "alice",
                "ALICE",
                "ａｌｉｃｅ",
                "Ａｌｉｃｅ",
                "alıce",
                "ALİCE",
                "alİce",
            ][..],
            &["strasse", "straße", "STRASSE", "ſtraße"],
            &["kelvin", "\u{212A}elvin"],
            &["office", "oﬃce"],
            &["σοφος", "σοφοσ", "ΣΟΦΟΣ", "σοφος"],
            &["ohm\u{03C9}", "ohm\u{2126}"],
            &["e\u{0301}cole", "\u{00E9}cole", "\u{00C9}COLE"],
            &["a b", "a\u{00A0}b", "a\u{3000}b"],
        ] {
            let keys: Vec<_> = group.iter().map(|n| canonical(n, UNICODE)).collect();
            assert!(keys[0].is_ok(), "{group:?}: {keys:?}");
            assert!(keys.iter().all(|k| k == &keys[0]), "{group:?}: {keys:?}");
        }
        for raw in [
            "al\u{200B}ice",
            "al\u{00AD}ice",
            "alice\u{202E}",
            "ali\u{FE0F}ce",
            "alice\u{FEFF}",
            "alice﹔x",
            "alice；x",
            "a\u{FF1D}b",
        ] {
            assert_eq!(
                canonical(raw, UNICODE),
                Err(NameError::Forbidden),
                "{raw:?}"
            );
        }
    }
}
