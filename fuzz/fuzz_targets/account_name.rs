//! Account names: never a panic; a key is its own key, and holds nothing a form parser splits at.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twofa_proxy::login::account::{NameRules, canonical};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for unicode in [false, true] {
        let rules = NameRules {
            case_sensitive: false,
            unicode,
        };
        if let Ok(key) = canonical(raw, rules) {
            assert_eq!(canonical(&key, rules).as_deref(), Ok(&*key), "{raw:?}");
            assert!(!key.contains([';', '&', '=']) && !key.chars().any(char::is_control));
            assert!(unicode || key.is_ascii());
        }
    }
});
