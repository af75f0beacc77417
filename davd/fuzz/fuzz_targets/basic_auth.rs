//! HTTP Basic credentials from an Authorization header value.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((user, _password)) = davd::auth::parse_basic(data) {
        assert!(!user.is_empty() && !user.contains(':'));
    }
});
