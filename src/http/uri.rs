//! Splitting a request-target into PATH_INFO and QUERY_STRING the way Waitress (with Python's
//! `urlsplit` and `unquote_to_bytes`) does.

use std::net::Ipv6Addr;

/// The request-target cannot be split (Waitress: `Bad URI`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadUri;

/// Splits a request-target into the percent-decoded path (leading repeated slashes collapsed to
/// one) and the raw query (without `?`, fragment dropped).
///
/// A target starting with `//` is split on the first `#` and then the first `?` and nothing else.
/// Any other target goes through the `urlsplit` rules: raw non-ASCII → [`BadUri`]; leading C0
/// controls and spaces are stripped and TAB/CR/LF removed; a `scheme:` prefix and a `//authority`
/// are dropped (so `http://x.com:81/p?q` → path `/p`, query `q`, and `http://x.com` → empty path).
pub fn split_target(target: &[u8]) -> Result<(Vec<u8>, Vec<u8>), BadUri> {
    let cleaned: Vec<u8>;
    let (path, query) = if target.starts_with(b"//") {
        let before_fragment = split_once(target, b'#').0;
        split_once(before_fragment, b'?')
    } else {
        if !target.is_ascii() {
            return Err(BadUri);
        }
        let start = target.iter().position(|&b| b > b' ').unwrap_or(target.len());
        let trimmed = &target[start..];
        let url: &[u8] = if trimmed.iter().any(|&b| matches!(b, b'\t' | b'\r' | b'\n')) {
            cleaned = trimmed
                .iter()
                .copied()
                .filter(|b| !matches!(b, b'\t' | b'\r' | b'\n'))
                .collect::<Vec<u8>>();
            &cleaned
        } else {
            trimmed
        };
        split_url(url)?
    };
    return Ok((collapse_slashes(unquote(path)), query.to_vec()));

    fn split_url(url: &[u8]) -> Result<(&[u8], &[u8]), BadUri> {
        let mut rest = url;
        if let Some(colon) = rest.iter().position(|&b| b == b':') {
            if colon > 0
                && rest[0].is_ascii_alphabetic()
                && rest[..colon]
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            {
                rest = &rest[colon + 1..];
            }
        }
        if rest.starts_with(b"//") {
            let end = rest[2..]
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .map_or(rest.len(), |i| i + 2);
            check_netloc(&rest[2..end])?;
            rest = &rest[end..];
        }
        let before_fragment = split_once(rest, b'#').0;
        Ok(split_once(before_fragment, b'?'))
    }
}

/// `urlsplit`'s bracket checks on the authority (an unbalanced `[`/`]`, or a bracketed host that
/// is not an IPv6 address or `v<hex>.<...>`). Python raises ValueError; maitre answers `Bad URI`.
fn check_netloc(netloc: &[u8]) -> Result<(), BadUri> {
    let open = netloc.contains(&b'[');
    let close = netloc.contains(&b']');
    if open != close {
        return Err(BadUri);
    }
    if !open {
        return Ok(());
    }
    let host = split_once(netloc, b'[').1;
    let host = split_once(host, b']').0;
    if let Some(future) = host.strip_prefix(b"v") {
        // v 1*HEXDIG "." 1*any
        let dot = future.iter().position(|&b| b == b'.').ok_or(BadUri)?;
        let ok = dot > 0 && future[..dot].iter().all(u8::is_ascii_hexdigit) && future.len() > dot + 1;
        return if ok { Ok(()) } else { Err(BadUri) };
    }
    let addr = split_once(host, b'%').0;
    let scope_ok = match host.iter().position(|&b| b == b'%') {
        Some(i) => i + 1 < host.len(),
        None => true,
    };
    match std::str::from_utf8(addr).ok().and_then(|s| s.parse::<Ipv6Addr>().ok()) {
        Some(_) if scope_ok => Ok(()),
        _ => Err(BadUri),
    }
}

/// `(before, after)` the first `sep`; `after` is empty when there is none.
fn split_once(s: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == sep) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &s[s.len()..]),
    }
}

/// Python's `unquote_to_bytes`: `%XX` with two hex digits becomes that byte; anything else,
/// including a lone or malformed `%`, is kept as is.
pub fn unquote(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).and_then(|&c| hex_val(c)),
                s.get(i + 2).and_then(|&c| hex_val(c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `"/" + path.lstrip("/")` for a path that starts with `/`; other paths unchanged.
fn collapse_slashes(mut path: Vec<u8>) -> Vec<u8> {
    if path.starts_with(b"//") {
        let extra = path.iter().take_while(|&&b| b == b'/').count() - 1;
        path.drain(..extra);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(t: &str) -> (String, String) {
        let (p, q) = split_target(t.as_bytes()).unwrap();
        (
            p.iter().map(|&b| b as char).collect(),
            q.iter().map(|&b| b as char).collect(),
        )
    }

    #[test]
    fn origin_form() {
        assert_eq!(split("/"), ("/".into(), "".into()));
        assert_eq!(split("/a/b?x=1&y=2"), ("/a/b".into(), "x=1&y=2".into()));
        assert_eq!(split("/a?b?c#frag?x"), ("/a".into(), "b?c".into()));
        assert_eq!(split("/a#f"), ("/a".into(), "".into()));
        assert_eq!(split("/a;p=1/b;q?x"), ("/a;p=1/b;q".into(), "x".into()));
        assert_eq!(split("/a%C5%9B"), ("/a\u{c5}\u{9b}".into(), "".into()));
        assert_eq!(split("/a%2Fb%zz%4%"), ("/a/b%zz%4%".into(), "".into()));
        assert_eq!(split("/x?a%20b"), ("/x".into(), "a%20b".into()));
        assert_eq!(split("*"), ("*".into(), "".into()));
    }

    #[test]
    fn leading_slashes() {
        assert_eq!(split("//x/y"), ("/x/y".into(), "".into()));
        assert_eq!(split("///x?q#f"), ("/x".into(), "q".into()));
        assert_eq!(split("/%2F%2Fx"), ("/x".into(), "".into()));
        assert_eq!(split("//"), ("/".into(), "".into()));
        // `//` bypasses urlsplit, so raw non-ASCII is accepted there.
        assert_eq!(split_target(b"//caf\xc3\xa9").unwrap().0, b"/caf\xc3\xa9".to_vec());
    }

    #[test]
    fn absolute_form() {
        assert_eq!(split("http://x.com:81/p?q"), ("/p".into(), "q".into()));
        assert_eq!(split("http://x.com"), ("".into(), "".into()));
        assert_eq!(split("http://x.com?q"), ("".into(), "q".into()));
        assert_eq!(split("HTTPS://x.com//a//b"), ("/a//b".into(), "".into()));
        assert_eq!(split("a:b"), ("b".into(), "".into()));
        assert_eq!(split("/a:b"), ("/a:b".into(), "".into()));
        assert_eq!(split("1a:b"), ("1a:b".into(), "".into()));
        assert_eq!(split("http://[::1]:80/x"), ("/x".into(), "".into()));
        assert_eq!(split("http://[v1.x]/x"), ("/x".into(), "".into()));
    }

    #[test]
    fn python_cleanup() {
        assert_eq!(split("\x00\x01/x"), ("/x".into(), "".into()));
        assert_eq!(split("/a\tb"), ("/ab".into(), "".into()));
        assert_eq!(split("/a\x7fb\x00"), ("/a\x7fb\x00".into(), "".into()));
        // after stripping, "//x" is an authority
        assert_eq!(split("\x01//x/y"), ("/y".into(), "".into()));
    }

    #[test]
    fn bad() {
        assert_eq!(split_target(b"/caf\xc3\xa9"), Err(BadUri));
        assert_eq!(split_target(b"/x?\xff"), Err(BadUri));
        assert_eq!(split_target(b"http://[::1/x"), Err(BadUri));
        assert_eq!(split_target(b"http://::1]/x"), Err(BadUri));
        assert_eq!(split_target(b"http://[1.2.3.4]/x"), Err(BadUri));
        assert_eq!(split_target(b"http://[vz.x]/x"), Err(BadUri));
    }
}
