//! The SMTP command-line parser must answer every input with a command or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tinydc_smtpd::parser::parse_command(data) {
        let _ = e.reply().to_wire();
    }
});
