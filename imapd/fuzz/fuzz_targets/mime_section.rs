//! Any bytes as a stored message, with a section path taken from the first bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinydc_imapd::wire::fuzz::mime_section(data);
});
