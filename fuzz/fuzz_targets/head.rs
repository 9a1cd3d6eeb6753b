//! The request-head parser: arbitrary bytes as a request head (request line and header lines),
//! terminated so that the parser always sees a complete head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maitre::http::Limits;
use maitre::testkit::{check_splits, run_split, Out};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    // As sent: whatever it is, it ends in a request, an error, or "need more".
    let raw = run_split(&limits, data, &[]);
    assert!(raw.left <= data.len());
    // Terminated: the head is complete, so the outcome is decided (a request, or an error).
    let mut head = data.to_vec();
    head.extend_from_slice(b"\r\n\r\n");
    let run = check_splits(&limits, &head, &[data.len() / 2, 1]);
    if let Some(Out::Req { headers, .. }) = run.outs.first() {
        for (key, value) in headers {
            // Values are stripped of SP/HTAB at the ends and hold no CR/LF (fields are single
            // lines; an obs-fold is joined without its CRLF).
            assert!(!value.contains(&b'\r') && !value.contains(&b'\n'), "{key}: {value:?}");
            assert!(
                !value.starts_with(b" ") && !value.starts_with(b"\t"),
                "{key}: {value:?}"
            );
            assert!(!key.contains('-') && !key[5.min(key.len())..].is_empty(), "key {key:?}");
        }
    }
});
