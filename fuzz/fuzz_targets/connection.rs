//! A whole connection: arbitrary bytes in arbitrary splits through the reader, as the event loop
//! feeds it. Input layout: `[limits, n, n piece sizes..., stream...]`. Checks (in
//! `maitre::testkit`): no panic, nothing consumed beyond the input, the buffer kept between reads
//! bounded by the header limit, no request after an error, and the same outcome whatever the
//! split (up to the documented 413-versus-framing-400 case).
#![no_main]

use libfuzzer_sys::fuzz_target;
use maitre::http::Limits;
use maitre::testkit::{check_splits, small_limits};

fuzz_target!(|data: &[u8]| {
    let [l, n, rest @ ..] = data else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let pieces: Vec<usize> = sizes.iter().map(|&b| usize::from(b)).collect();
    let limits = if l & 0xc0 == 0xc0 {
        Limits::default()
    } else {
        small_limits(*l)
    };
    check_splits(&limits, stream, &pieces);
});
