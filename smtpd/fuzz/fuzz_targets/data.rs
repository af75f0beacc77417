//! The DATA decoder: any byte stream, split anywhere, gives the same result as in one piece,
//! and never keeps more than its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinydc_smtpd::parser::DataDecoder;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize % (data.len().max(1));
    let mut whole = DataDecoder::new(512);
    let (used_whole, done_whole) = whole.feed(data);
    let mut parts = DataDecoder::new(512);
    let (used_a, done_a) = parts.feed(&data[..split]);
    let (used, done) = if done_a {
        (used_a, true)
    } else {
        let (used_b, done_b) = parts.feed(&data[split..]);
        (split + used_b, done_b)
    };
    assert_eq!((used, done), (used_whole, done_whole));
    assert_eq!(parts.body, whole.body);
    assert!(whole.body.len() <= 512);
});
