//! Path normalisation: never a panic; an accepted path is canonical (normalising it again
//! changes nothing) and holds no segment an upstream could resolve differently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twofa_proxy::login::gate::normalize_path;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = normalize_path(raw) {
        if path == "*" {
            return;
        }
        assert!(path.starts_with('/'));
        assert_eq!(normalize_path(&path).as_deref(), Ok(&*path), "{raw:?}");
        for bad in ["//", "/./", "/../", "\\"] {
            assert!(!path.contains(bad), "{raw:?} -> {path:?}");
        }
        assert!(
            !path.ends_with("/.") && !path.ends_with("/.."),
            "{raw:?} -> {path:?}"
        );
    }
});
