//! Any bytes as lines for the framer (literal announcements).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinydc_imapd::wire::fuzz::framing(data);
});
