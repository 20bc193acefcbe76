//! Login media types: never a panic, and a type read as UTF-8 carries no other charset for a
//! container that searches the value for `charset` the lenient way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twofa_proxy::login::media::{Charset, login_media};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, charset)) = login_media(data) {
        let text = std::str::from_utf8(data).expect("an accepted type is ASCII");
        let lower = text.to_ascii_lowercase();
        let mentions = lower.matches("charset").count();
        assert!(mentions <= 1, "{text:?}");
        if mentions == 1 {
            let after = lower.split("charset").nth(1).unwrap_or("");
            let value = after
                .trim_start()
                .trim_start_matches('=')
                .trim_start()
                .trim_matches('"');
            let value = value.split([';', ' ', '\t', '"']).next().unwrap_or("");
            let want = match charset {
                Charset::Utf8 => "utf-8",
                Charset::Ascii => "us-ascii",
            };
            assert_eq!(value, want, "{text:?}");
        }
    }
});
