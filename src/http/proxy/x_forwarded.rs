//! The `X-Forwarded-For`, `-Host`, `-Proto`, `-Port` and `-By` headers, as the first half of
//! Waitress's `parse_proxy_headers` reads them.

use super::{find, join_tail, tail, undquote, Fail, Origin, TrustedHeaders, INVALID_QUOTING};
use crate::http::pystr::str_strip;
use crate::http::Header;

/// The reason of a `MalformedProxyHeader` for a comma in a single-valued header.
const MULTIPLE_VALUES: &str = "Unspecified behavior for multiple values found in header";

/// Reads the trusted `X-Forwarded-*` headers into `origin` and takes each trusted one out of
/// `untrusted`. `X-Forwarded-For` and `X-Forwarded-Host` are cut down to their last `count` hops
/// in place.
pub(super) fn read(
    headers: &mut [Header],
    trusted: TrustedHeaders,
    count: usize,
    origin: &mut Origin,
    untrusted: &mut TrustedHeaders,
) -> Result<(), Fail> {
    if trusted.contains(TrustedHeaders::X_FORWARDED_FOR) {
        if let Some(h) = find(headers, "HTTP_X_FORWARDED_FOR") {
            let raw: Vec<&[u8]> = h.value.split(|&b| b == b',').collect();
            let mut hops = Vec::with_capacity(raw.len());
            for hop in &raw {
                let hop = undquote(str_strip(hop)).map_err(|_| Fail::Malformed {
                    header: "X-Forwarded-For",
                    reason: INVALID_QUOTING,
                    value: h.value.clone(),
                })?;
                // An IPv6 address without a port gets brackets.
                if !hop.contains(&b'.') && hop.contains(&b':') && hop.last() != Some(&b']') {
                    let mut b = Vec::with_capacity(hop.len() + 2);
                    b.push(b'[');
                    b.extend_from_slice(&hop);
                    b.push(b']');
                    hops.push(b);
                } else {
                    hops.push(hop);
                }
            }
            origin.client_addr = tail(&hops, count)[0].clone();
            untrusted.remove(TrustedHeaders::X_FORWARDED_FOR);
            let kept = join_tail(&raw, count);
            h.value = kept;
        }
    }

    if trusted.contains(TrustedHeaders::X_FORWARDED_HOST) {
        if let Some(h) = find(headers, "HTTP_X_FORWARDED_HOST") {
            let raw: Vec<&[u8]> = h.value.split(|&b| b == b',').collect();
            let mut hosts = Vec::with_capacity(raw.len());
            for one in &raw {
                hosts.push(undquote(str_strip(one)).map_err(|_| Fail::Malformed {
                    header: "X-Forwarded-Host",
                    reason: INVALID_QUOTING,
                    value: h.value.clone(),
                })?);
            }
            origin.host = tail(&hosts, count)[0].clone();
            untrusted.remove(TrustedHeaders::X_FORWARDED_HOST);
            let kept = join_tail(&raw, count);
            h.value = kept;
        }
    }

    if trusted.contains(TrustedHeaders::X_FORWARDED_PROTO) {
        origin.proto = single_value(headers, "HTTP_X_FORWARDED_PROTO", "X-Forwarded-Proto")?;
        untrusted.remove(TrustedHeaders::X_FORWARDED_PROTO);
    }

    if trusted.contains(TrustedHeaders::X_FORWARDED_PORT) {
        origin.port = single_value(headers, "HTTP_X_FORWARDED_PORT", "X-Forwarded-Port")?;
        untrusted.remove(TrustedHeaders::X_FORWARDED_PORT);
    }

    if trusted.contains(TrustedHeaders::X_FORWARDED_BY) {
        // Not used here, but the app may read it.
        untrusted.remove(TrustedHeaders::X_FORWARDED_BY);
    }
    Ok(())
}

/// `X-Forwarded-Proto` / `X-Forwarded-Port`: unquoted, and a comma is an error. An absent header
/// is the empty value.
fn single_value(headers: &[Header], key: &str, name: &'static str) -> Result<Vec<u8>, Fail> {
    let Some(h) = headers.iter().find(|h| h.key == key) else {
        return Ok(Vec::new());
    };
    let malformed = |reason| Fail::Malformed {
        header: name,
        reason,
        value: h.value.clone(),
    };
    let value = undquote(&h.value).map_err(|_| malformed(INVALID_QUOTING))?;
    if value.contains(&b',') {
        return Err(malformed(MULTIPLE_VALUES));
    }
    Ok(value)
}
