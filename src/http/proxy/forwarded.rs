//! The RFC 7239 `Forwarded` header, as the second half of Waitress's `parse_proxy_headers` reads
//! it, with Waitress's checks (a pair without `=`, whitespace around a token or a value, bad
//! quoting) rather than RFC 7239's grammar.

use super::{find, join_tail, tail, undquote, Fail, Origin, INVALID_QUOTING};
use crate::http::pystr::{latin1_decode, str_lower, str_strip};
use crate::http::Header;

/// Reads a trusted `Forwarded` header into `origin`, cuts it down to its last `count` elements in
/// place, and logs unknown tokens to `warnings`. Returns whether there was a non-empty header to
/// read (which names it, rather than `X-Forwarded-Proto`, in a later proto error).
pub(super) fn read(
    headers: &mut [Header],
    count: usize,
    origin: &mut Origin,
    warnings: &mut Vec<String>,
) -> Result<bool, Fail> {
    let Some(h) = find(headers, "HTTP_FORWARDED") else {
        return Ok(false);
    };
    if h.value.is_empty() {
        return Ok(false);
    }
    let elements = parse(&h.value, warnings).map_err(|reason| Fail::Malformed {
        header: "Forwarded",
        reason,
        value: h.value.clone(),
    })?;
    // Waitress's element loop reuses its outer variables: afterwards host and proto hold the
    // newest element's values and any X-Forwarded-Port is gone.
    let newest = elements.last().expect("split yields an element");
    origin.host = newest.host.clone();
    origin.proto = newest.proto.clone();
    origin.port.clear();
    let raw: Vec<&[u8]> = h.value.split(|&b| b == b',').collect();
    h.value = join_tail(&raw, count);
    // The oldest trusted element carrying a value wins.
    for element in tail(&elements, count).iter().rev() {
        if !element.for_.is_empty() {
            origin.client_addr = element.for_.clone();
        }
        if !element.host.is_empty() {
            origin.host = element.host.clone();
        }
        if !element.proto.is_empty() {
            origin.proto = element.proto.clone();
        }
    }
    Ok(true)
}

/// One `Forwarded` element's pairs (lower-cased and unquoted).
struct Element {
    for_: Vec<u8>,
    host: Vec<u8>,
    proto: Vec<u8>,
}

/// Split a `Forwarded` value into elements as Waitress does; unknown tokens are logged and
/// ignored; the error is the `ValueError` text.
fn parse(value: &[u8], warnings: &mut Vec<String>) -> Result<Vec<Element>, &'static str> {
    let mut elements = Vec::new();
    for element in value.split(|&b| b == b',') {
        let mut e = Element {
            for_: Vec::new(),
            host: Vec::new(),
            proto: Vec::new(),
        };
        for pair in str_strip(element).split(|&b| b == b';') {
            if pair.is_empty() {
                continue;
            }
            let pair = str_lower(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                return Err("Invalid forwarded-pair missing \"=\"");
            };
            let (token, value) = (&pair[..eq], &pair[eq + 1..]);
            if str_strip(token).len() != token.len() {
                return Err("Token may not be surrounded by whitespace");
            }
            if str_strip(value).len() != value.len() {
                return Err("Value may not be surrounded by whitespace");
            }
            let slot = match token {
                b"by" => None,
                b"for" => Some(&mut e.for_),
                b"host" => Some(&mut e.host),
                b"proto" => Some(&mut e.proto),
                _ => {
                    warnings.push(format!("Unknown Forwarded token: {}", latin1_decode(token)));
                    continue;
                }
            };
            let value = undquote(value).map_err(|_| INVALID_QUOTING)?;
            if let Some(slot) = slot {
                *slot = value;
            }
        }
        elements.push(e);
    }
    Ok(elements)
}
