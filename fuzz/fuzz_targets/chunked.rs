//! The chunked decoder, through the reader. The first byte picks the mode:
//! - even: the rest is a raw chunked body after a fixed head (arbitrary framing, any outcome);
//! - odd: the rest is turned into well-formed chunks (sizes from the input, extensions and
//!   trailers from a fixed set), which must decode to exactly the original data in any split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maitre::http::Limits;
use maitre::testkit::{check_splits, small_limits, Out};

const HEAD: &[u8] = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";
const EXTS: [&[u8]; 6] = [b"", b";a", b";a=b", b";a=\"b c\"", b";a=\"\\\"\";b=c;d", b";x-y=1;Z"];
const TRAILERS: [&[u8]; 3] = [b"", b"X-T: 1\r\n", b"A: b\r\nC:\r\n"];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let limits = if mode & 2 == 0 {
        Limits::default()
    } else {
        // Small body limits and spill threshold; the fixed head always fits.
        Limits {
            max_request_header_size: 4096,
            ..small_limits(mode >> 2)
        }
    };
    if mode & 1 == 0 {
        let mut input = HEAD.to_vec();
        input.extend_from_slice(rest);
        let cut = rest
            .first()
            .map_or(0, |&b| HEAD.len() + usize::from(b) % (rest.len() + 1));
        check_splits(&limits, &input, &[cut, 3]);
        return;
    }
    // Well-formed: [len, payload...] records.
    let mut input = HEAD.to_vec();
    let mut expected = Vec::new();
    let mut i = 0;
    let mut k = 0usize;
    while i < rest.len() {
        let n = usize::from(rest[i] % 64).max(1);
        let chunk = &rest[i + 1..(i + 1 + n).min(rest.len())];
        i += 1 + n;
        if chunk.is_empty() {
            break;
        }
        let size = if k % 3 == 1 {
            format!("{:0>4X}", chunk.len())
        } else {
            format!("{:x}", chunk.len())
        };
        input.extend_from_slice(size.as_bytes());
        input.extend_from_slice(EXTS[(k + usize::from(rest[i - 1 - n])) % EXTS.len()]);
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(chunk);
        input.extend_from_slice(b"\r\n");
        expected.extend_from_slice(chunk);
        k += 1;
    }
    input.extend_from_slice(b"0\r\n");
    input.extend_from_slice(TRAILERS[k % TRAILERS.len()]);
    input.extend_from_slice(b"\r\n");
    let body_raw = input.len() - HEAD.len();
    input.extend_from_slice(NEXT);
    let run = check_splits(&limits, &input, &[HEAD.len() + 1, 2, 5]);
    if (body_raw as u64) < limits.max_request_body_size {
        // A well-formed body under the limit decodes to the data, and the next request follows.
        assert_eq!(run.outs.len(), 2, "{:?}", run.outs);
        match &run.outs[0] {
            Out::Req { body, headers, .. } => {
                assert_eq!(body, &expected);
                let cl = headers
                    .iter()
                    .find(|(k, _)| k == "CONTENT_LENGTH")
                    .map(|(_, v)| v.clone());
                assert_eq!(cl, Some(expected.len().to_string().into_bytes()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&run.outs[1], Out::Req { uri, .. } if uri == b"/next"));
    } else {
        assert!(matches!(run.outs.first(), Some(Out::Err(413, _, _))), "{:?}", run.outs);
    }
});
