//! The Win32 properties of a PROPPATCH body, and the times they carry.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for prop in davd::win32::sets_in(data) {
        let _ = davd::win32::time_of(&prop, "Win32CreationTime");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = davd::win32::parse_time(text);
    }
    let _ = davd::win32::text_of(data);
});
