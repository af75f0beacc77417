//! Any bytes as one command, in any session state (parsing does not depend on the state).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinydc_imapd::wire::fuzz::command(data);
});
