//! Request paths: the /dav/<address>/ prefix, dav-server's normalisation, davd's keys.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = davd::server::dav_prefix(text, "alice@example.test");
    if let Ok(path) = dav_server::davpath::DavPath::new(text) {
        let key = davd::paths::key(&path);
        assert!(key.starts_with('/'));
        assert!(!key.split('/').any(|s| s == ".."), "{key}");
        for ancestor in davd::paths::ancestors_and_self(&key) {
            assert!(davd::paths::is_at_or_below(&key, &ancestor));
        }
        let _ = davd::paths::decode_segment(&key);
    }
});
