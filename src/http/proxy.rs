//! Trusted proxy headers (`Forwarded`, `X-Forwarded-*`) applied to a request's environ exactly as
//! Waitress 3.0.2's `proxy_headers_middleware` does, sans-IO.
//!
//! Header values are latin-1 bytes, and every Python `str` operation the middleware performs on
//! them (`strip()`, `lower()`, `split(",")`, `rsplit(":", 1)`, `partition("=")`) maps one to one
//! onto bytes, so the work is done on `&[u8]` and only the results handed back as environ values
//! are decoded (latin-1, one char per byte) into `String`s.

use super::{Header, Headers};

/// Environ keys (with the `HTTP_` prefix) of the six proxy headers, in the order a removal
/// warning lists them.
const PROXY_KEYS: [&str; 6] = [
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_BY",
    "HTTP_FORWARDED",
];

/// The same six headers as Waitress's warning spells them (`X_FORWARDED_FOR` → `X-Forwarded-For`).
const PROXY_NAMES: [&str; 6] = [
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-By",
    "Forwarded",
];

/// A set of proxy headers (`trusted_proxy_headers`), as a bit set over the six names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrustedHeaders(u8);

impl TrustedHeaders {
    pub const X_FORWARDED_FOR: TrustedHeaders = TrustedHeaders(1);
    pub const X_FORWARDED_HOST: TrustedHeaders = TrustedHeaders(1 << 1);
    pub const X_FORWARDED_PROTO: TrustedHeaders = TrustedHeaders(1 << 2);
    pub const X_FORWARDED_PORT: TrustedHeaders = TrustedHeaders(1 << 3);
    pub const X_FORWARDED_BY: TrustedHeaders = TrustedHeaders(1 << 4);
    pub const FORWARDED: TrustedHeaders = TrustedHeaders(1 << 5);
    /// All six.
    pub const ALL: TrustedHeaders = TrustedHeaders(0b11_1111);

    /// The empty set.
    pub const fn empty() -> Self {
        TrustedHeaders(0)
    }

    /// The set named by `trusted_proxy_headers` values (`x-forwarded-for`, ..., `forwarded`;
    /// case-insensitive). An unknown name is returned as the error (Adjustments has already
    /// rejected those with Waitress's message).
    pub fn from_names<I, S>(names: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = TrustedHeaders::empty();
        for name in names {
            let name = name.as_ref();
            set.insert(match name.to_ascii_lowercase().as_str() {
                "x-forwarded-for" => Self::X_FORWARDED_FOR,
                "x-forwarded-host" => Self::X_FORWARDED_HOST,
                "x-forwarded-proto" => Self::X_FORWARDED_PROTO,
                "x-forwarded-port" => Self::X_FORWARDED_PORT,
                "x-forwarded-by" => Self::X_FORWARDED_BY,
                "forwarded" => Self::FORWARDED,
                _ => return Err(name.to_string()),
            });
        }
        Ok(set)
    }

    /// Whether every header of `other` is in the set.
    pub const fn contains(self, other: TrustedHeaders) -> bool {
        self.0 & other.0 == other.0
    }

    /// Add the headers of `other`.
    pub fn insert(&mut self, other: TrustedHeaders) {
        self.0 |= other.0;
    }

    /// Remove the headers of `other`.
    pub fn remove(&mut self, other: TrustedHeaders) {
        self.0 &= !other.0;
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The single-header sets in [`PROXY_KEYS`] order.
    fn nth(i: usize) -> TrustedHeaders {
        TrustedHeaders(1 << i)
    }
}

/// The proxy adjustments (`trusted_proxy`, `trusted_proxy_count`, `trusted_proxy_headers`,
/// `clear_untrusted_proxy_headers`, `log_untrusted_proxy_headers`) as Adjustments leaves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The peer address (`REMOTE_ADDR`, `localhost` for Unix sockets) whose headers are trusted;
    /// `"*"` trusts every peer; `None` trusts nobody.
    pub trusted_proxy: Option<String>,
    /// How many hops (the last entries of each header) to trust; 0 means all of them, as
    /// Python's `[-0:]` slice does.
    pub trusted_proxy_count: usize,
    /// The headers a trusted proxy may set.
    pub trusted_headers: TrustedHeaders,
    /// Remove the proxy headers that are not trusted from the environ.
    pub clear_untrusted: bool,
    /// Log a warning naming the untrusted headers removed.
    pub log_untrusted: bool,
}

/// What applying the proxy headers did, beyond the changes made to the headers in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Environ keys to set after the headers, overriding them (`REMOTE_ADDR`, `REMOTE_HOST`,
    /// `REMOTE_PORT`, `wsgi.url_scheme`, `SERVER_NAME`, `SERVER_PORT`, `HTTP_HOST`), each at most
    /// once. Values are Python `str`s: latin-1 bytes decoded one char per byte.
    pub set: Vec<(&'static str, String)>,
    /// WARNING lines to log on the `maitre` logger, in order.
    pub warnings: Vec<String>,
}

/// A request the proxy headers make unservable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyError {
    /// 400 for a malformed trusted header (answer with [`proxy_error_body`] through the app path).
    /// 500 where Waitress's middleware itself raises (`IndexError`: a forwarded client address
    /// that is blank once stripped, e.g. `X-Forwarded-For: ":80"`); Waitress answers that as an
    /// app exception: 500, `Exception while serving <path>` logged at ERROR.
    pub status: u16,
    /// For 400: `Header "X-Forwarded-Proto" malformed.`; for 500: the Python exception text
    /// (`IndexError: string index out of range`).
    pub detail: String,
    /// WARNING lines to log first (unknown `Forwarded` tokens, then the `Malformed proxy header`
    /// line for a 400).
    pub warnings: Vec<String>,
}

/// The body of Waitress's 400 for a malformed proxy header. The tag says `server`, never the
/// ident: the middleware builds the response without one.
pub fn proxy_error_body(detail: &str) -> Vec<u8> {
    format!("Bad Request\r\n\r\n{detail}\r\n\r\n(generated by server)").into_bytes()
}

/// Why parsing stopped.
enum Fail {
    /// `MalformedProxyHeader(header, reason, value)`.
    Malformed {
        header: &'static str,
        reason: &'static str,
        value: Vec<u8>,
    },
    /// An `IndexError` escaping the middleware.
    Crash,
}

const INVALID_QUOTING: &str = "Invalid quoting in value";
const MULTIPLE_VALUES: &str = "Unspecified behavior for multiple values found in header";

impl ProxyConfig {
    /// Apply the proxy headers of one request, as the middleware does to the environ.
    ///
    /// `headers` are the request's environ-keyed headers: trusted ones are rewritten in place
    /// (`HTTP_X_FORWARDED_FOR`, `HTTP_X_FORWARDED_HOST` and `HTTP_FORWARDED` keep only the
    /// trusted hops) and, with `clear_untrusted`, the untrusted ones are removed. `remote_addr`
    /// is `REMOTE_ADDR` (`localhost` on a Unix socket), `url_scheme` the scheme before any
    /// forwarded proto. `remote_port` and `server_port` are the values the environ has before;
    /// nothing here depends on them.
    pub fn apply(
        &self,
        headers: &mut Headers,
        remote_addr: &str,
        _remote_port: &str,
        url_scheme: &str,
        _server_port: &str,
    ) -> Result<Applied, ProxyError> {
        let mut applied = Applied::default();
        let mut untrusted = TrustedHeaders::ALL;
        let trusted_peer = match self.trusted_proxy.as_deref() {
            Some(p) => p == "*" || p == remote_addr,
            None => false,
        };
        // Most requests carry none of the proxy headers: nothing to apply or clear then.
        if !headers.iter().any(|h| PROXY_KEYS.contains(&&*h.key)) {
            return Ok(applied);
        }
        if trusted_peer {
            match self.parse(headers, url_scheme, &mut applied) {
                Ok(u) => untrusted = u,
                Err(Fail::Malformed { header, reason, value }) => {
                    applied.warnings.push(format!(
                        "Malformed proxy header \"{header}\" from \"{remote_addr}\": {reason} value: {}",
                        latin1(&value)
                    ));
                    return Err(ProxyError {
                        status: 400,
                        detail: format!("Header \"{header}\" malformed."),
                        warnings: applied.warnings,
                    });
                }
                Err(Fail::Crash) => {
                    return Err(ProxyError {
                        status: 500,
                        detail: "IndexError: string index out of range".to_string(),
                        warnings: applied.warnings,
                    });
                }
            }
        }
        if self.clear_untrusted {
            let mut removed = Vec::new();
            for (i, key) in PROXY_KEYS.iter().enumerate() {
                if untrusted.contains(TrustedHeaders::nth(i)) {
                    if let Some(pos) = headers.iter().position(|h| h.key == *key) {
                        headers.remove(pos);
                        removed.push(PROXY_NAMES[i]);
                    }
                }
            }
            if self.log_untrusted && !removed.is_empty() {
                applied.warnings.push(format!(
                    "Removed untrusted headers ({}). Waitress recommends these be removed upstream.",
                    removed.join(", ")
                ));
            }
        }
        Ok(applied)
    }

    /// Waitress's `parse_proxy_headers`: apply the trusted headers and return the untrusted set.
    fn parse(&self, headers: &mut [Header], url_scheme: &str, applied: &mut Applied) -> Result<TrustedHeaders, Fail> {
        let trusted = self.trusted_headers;
        let count = self.trusted_proxy_count;
        let mut untrusted = TrustedHeaders::ALL;
        let mut client_addr: Vec<u8> = Vec::new();
        let mut host: Vec<u8> = Vec::new();
        let mut proto: Vec<u8> = Vec::new();
        let mut port: Vec<u8> = Vec::new();

        if trusted.contains(TrustedHeaders::X_FORWARDED_FOR) {
            if let Some(h) = find(headers, "HTTP_X_FORWARDED_FOR") {
                let raw: Vec<&[u8]> = h.value.split(|&b| b == b',').collect();
                let mut hops = Vec::with_capacity(raw.len());
                for hop in &raw {
                    let hop = undquote(py_strip(hop)).map_err(|_| Fail::Malformed {
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
                client_addr = tail(&hops, count)[0].clone();
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
                    hosts.push(undquote(py_strip(one)).map_err(|_| Fail::Malformed {
                        header: "X-Forwarded-Host",
                        reason: INVALID_QUOTING,
                        value: h.value.clone(),
                    })?);
                }
                host = tail(&hosts, count)[0].clone();
                untrusted.remove(TrustedHeaders::X_FORWARDED_HOST);
                let kept = join_tail(&raw, count);
                h.value = kept;
            }
        }

        if trusted.contains(TrustedHeaders::X_FORWARDED_PROTO) {
            proto = single_value(headers, "HTTP_X_FORWARDED_PROTO", "X-Forwarded-Proto")?;
            untrusted.remove(TrustedHeaders::X_FORWARDED_PROTO);
        }

        if trusted.contains(TrustedHeaders::X_FORWARDED_PORT) {
            port = single_value(headers, "HTTP_X_FORWARDED_PORT", "X-Forwarded-Port")?;
            untrusted.remove(TrustedHeaders::X_FORWARDED_PORT);
        }

        if trusted.contains(TrustedHeaders::X_FORWARDED_BY) {
            // Not used here, but the app may read it.
            untrusted.remove(TrustedHeaders::X_FORWARDED_BY);
        }

        let mut forwarded_trusted = false;
        if trusted.contains(TrustedHeaders::FORWARDED) {
            untrusted = TrustedHeaders::ALL;
            untrusted.remove(TrustedHeaders::FORWARDED);
            if let Some(h) = find(headers, "HTTP_FORWARDED") {
                if !h.value.is_empty() {
                    forwarded_trusted = true;
                    let elements =
                        parse_forwarded(&h.value, &mut applied.warnings).map_err(|reason| Fail::Malformed {
                            header: "Forwarded",
                            reason,
                            value: h.value.clone(),
                        })?;
                    // Waitress's element loop reuses its outer variables: afterwards host and
                    // proto hold the newest element's values and any X-Forwarded-Port is gone.
                    let newest = elements.last().expect("split yields an element");
                    host = newest.host.clone();
                    proto = newest.proto.clone();
                    port.clear();
                    let raw: Vec<&[u8]> = h.value.split(|&b| b == b',').collect();
                    h.value = join_tail(&raw, count);
                    // The oldest trusted element carrying a value wins.
                    for element in tail(&elements, count).iter().rev() {
                        if !element.for_.is_empty() {
                            client_addr = element.for_.clone();
                        }
                        if !element.host.is_empty() {
                            host = element.host.clone();
                        }
                        if !element.proto.is_empty() {
                            proto = element.proto.clone();
                        }
                    }
                }
            }
        }

        let mut scheme = url_scheme.to_string();
        if !proto.is_empty() {
            let proto = py_lower(&proto);
            if proto != b"http" && proto != b"https" {
                return Err(Fail::Malformed {
                    header: if forwarded_trusted {
                        "Forwarded Proto="
                    } else {
                        "X-Forwarded-Proto"
                    },
                    reason: "unsupported proto value",
                    value: proto,
                });
            }
            scheme = latin1(&proto);
            set(applied, "wsgi.url_scheme", scheme.clone());
            if port.is_empty() {
                port = if proto == b"http" {
                    b"80".to_vec()
                } else {
                    b"443".to_vec()
                };
            }
        }

        if !host.is_empty() {
            if host.contains(&b':') && host.last() != Some(&b']') {
                // A port in the forwarded host beats X-Forwarded-Port and the proto's port.
                let (name, host_port) = rsplit_colon(&host);
                port = host_port.to_vec();
                set(applied, "SERVER_NAME", latin1(py_strip(name)));
                set(applied, "HTTP_HOST", latin1(&host));
            } else {
                set(applied, "SERVER_NAME", latin1(&host));
                let with_port = !port.is_empty()
                    && match port.as_slice() {
                        b"80" => scheme != "http",
                        b"443" => scheme != "https",
                        _ => true,
                    };
                let mut value = host.clone();
                if with_port {
                    value.push(b':');
                    value.extend_from_slice(&port);
                }
                set(applied, "HTTP_HOST", latin1(&value));
            }
        }

        if !port.is_empty() {
            set(applied, "SERVER_PORT", latin1(&port));
        }

        if !client_addr.is_empty() {
            let addr = if client_addr.contains(&b':') && client_addr.last() != Some(&b']') {
                let (addr, remote_port) = rsplit_colon(&client_addr);
                let addr = strip_brackets(py_strip(addr)).ok_or(Fail::Crash)?;
                set(applied, "REMOTE_ADDR", latin1(addr));
                set(applied, "REMOTE_PORT", latin1(py_strip(remote_port)));
                addr
            } else {
                let addr = strip_brackets(py_strip(&client_addr)).ok_or(Fail::Crash)?;
                set(applied, "REMOTE_ADDR", latin1(addr));
                addr
            };
            set(applied, "REMOTE_HOST", latin1(addr));
        }

        Ok(untrusted)
    }
}

/// One `Forwarded` element's pairs (lower-cased and unquoted).
struct Element {
    for_: Vec<u8>,
    host: Vec<u8>,
    proto: Vec<u8>,
}

/// Split a `Forwarded` value into elements as Waitress does; unknown tokens are logged and
/// ignored; the error is the `ValueError` text.
fn parse_forwarded(value: &[u8], warnings: &mut Vec<String>) -> Result<Vec<Element>, &'static str> {
    let mut elements = Vec::new();
    for element in value.split(|&b| b == b',') {
        let mut e = Element {
            for_: Vec::new(),
            host: Vec::new(),
            proto: Vec::new(),
        };
        for pair in py_strip(element).split(|&b| b == b';') {
            if pair.is_empty() {
                continue;
            }
            let pair = py_lower(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                return Err("Invalid forwarded-pair missing \"=\"");
            };
            let (token, value) = (&pair[..eq], &pair[eq + 1..]);
            if py_strip(token).len() != token.len() {
                return Err("Token may not be surrounded by whitespace");
            }
            if py_strip(value).len() != value.len() {
                return Err("Value may not be surrounded by whitespace");
            }
            let slot = match token {
                b"by" => None,
                b"for" => Some(&mut e.for_),
                b"host" => Some(&mut e.host),
                b"proto" => Some(&mut e.proto),
                _ => {
                    warnings.push(format!("Unknown Forwarded token: {}", latin1(token)));
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

fn find<'h>(headers: &'h mut [Header], key: &str) -> Option<&'h mut Header> {
    headers.iter_mut().find(|h| h.key == key)
}

/// Record an environ assignment; a later one of the same key replaces the earlier.
fn set(applied: &mut Applied, key: &'static str, value: String) {
    match applied.set.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => applied.set.push((key, value)),
    }
}

/// Python's `items[-count:]` for `count >= 0` (`[-0:]` is the whole list).
fn tail<T>(items: &[T], count: usize) -> &[T] {
    if count == 0 || count >= items.len() {
        items
    } else {
        &items[items.len() - count..]
    }
}

/// `",".join(raw[-count:]).strip()`.
fn join_tail(raw: &[&[u8]], count: usize) -> Vec<u8> {
    py_strip(&tail(raw, count).join(&b","[..])).to_vec()
}

/// `s.rsplit(":", 1)` for an `s` known to contain a colon.
fn rsplit_colon(s: &[u8]) -> (&[u8], &[u8]) {
    let i = s.iter().rposition(|&b| b == b':').expect("contains a colon");
    (&s[..i], &s[i + 1..])
}

/// Waitress's `strip_brackets`: `[::1]` → `::1`. `None` where it raises `IndexError` (empty).
fn strip_brackets(addr: &[u8]) -> Option<&[u8]> {
    match addr {
        [] => None,
        [b'[', inner @ .., b']'] => Some(inner),
        _ => Some(addr),
    }
}

/// Python's `str.isspace()` over latin-1 characters.
fn py_is_space(b: u8) -> bool {
    matches!(b, 0x09..=0x0d | 0x1c..=0x20 | 0x85 | 0xa0)
}

/// Python's `str.strip()` over latin-1 characters.
fn py_strip(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !py_is_space(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !py_is_space(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// Python's `str.lower()` over latin-1 characters (À..Þ except × have lower-case forms).
fn py_lower(s: &[u8]) -> Vec<u8> {
    s.iter()
        .map(|&b| match b {
            b'A'..=b'Z' | 0xc0..=0xd6 | 0xd8..=0xde => b + 0x20,
            _ => b,
        })
        .collect()
}

/// Latin-1 decoding: one char per byte.
fn latin1(s: &[u8]) -> String {
    s.iter().map(|&b| char::from(b)).collect()
}

/// RFC 7230 qdtext (as a latin-1 character).
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// The character after a backslash in an RFC 7230 quoted-pair.
fn is_quoted_pair_char(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}

/// Waitress's `undquote`: a value in double quotes must be one valid quoted-string and comes
/// back without the quotes and with quoted-pairs unescaped; a value with no quote at either end
/// comes back as is; anything else (a quote at one end only, an invalid quoted-string) is the
/// `Invalid quoting in value` error.
fn undquote(value: &[u8]) -> Result<Vec<u8>, ()> {
    let starts = value.first() == Some(&b'"');
    let ends = value.last() == Some(&b'"');
    if !starts && !ends {
        return Ok(value.to_vec());
    }
    if !(starts && ends) {
        return Err(());
    }
    // The quoted-string that starts at 0 ends at the first quote not in a quoted-pair; it must
    // end at the end of the value.
    let mut out = Vec::with_capacity(value.len());
    let mut i = 1;
    while i < value.len() {
        match value[i] {
            b'"' => {
                return if i + 1 == value.len() { Ok(out) } else { Err(()) };
            }
            b'\\' => match value.get(i + 1) {
                Some(&c) if is_quoted_pair_char(c) => {
                    out.push(c);
                    i += 2;
                }
                _ => return Err(()),
            },
            c if is_qdtext(c) => {
                out.push(c);
                i += 1;
            }
            _ => return Err(()),
        }
    }
    Err(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| Header {
                key: Cow::Owned(k.to_string()),
                value: v.bytes().collect(),
            })
            .collect()
    }

    fn config(trusted: Option<&str>, count: usize, names: &[&str]) -> ProxyConfig {
        ProxyConfig {
            trusted_proxy: trusted.map(str::to_string),
            trusted_proxy_count: count,
            trusted_headers: TrustedHeaders::from_names(names).unwrap(),
            clear_untrusted: true,
            log_untrusted: false,
        }
    }

    /// Run `cfg` from peer 192.168.1.1 with scheme http; returns (set, remaining headers).
    fn run(cfg: &ProxyConfig, pairs: &[(&str, &str)]) -> (Vec<(&'static str, String)>, Headers) {
        let mut h = hdrs(pairs);
        let applied = cfg.apply(&mut h, "192.168.1.1", "80", "http", "8080").unwrap();
        (applied.set, h)
    }

    fn get<'a>(set: &'a [(&'static str, String)], key: &str) -> Option<&'a str> {
        set.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    fn header<'a>(h: &'a [Header], key: &str) -> Option<&'a [u8]> {
        h.iter().find(|x| x.key == key).map(|x| x.value.as_slice())
    }

    fn err(cfg: &ProxyConfig, pairs: &[(&str, &str)]) -> ProxyError {
        cfg.apply(&mut hdrs(pairs), "192.168.1.1", "80", "http", "8080")
            .unwrap_err()
    }

    #[test]
    fn error_body() {
        assert_eq!(
            proxy_error_body("Header \"X-Forwarded-Proto\" malformed."),
            b"Bad Request\r\n\r\nHeader \"X-Forwarded-Proto\" malformed.\r\n\r\n(generated by server)"
        );
    }

    #[test]
    fn names() {
        let t = TrustedHeaders::from_names(["X-Forwarded-For", "forwarded"]).unwrap();
        assert!(t.contains(TrustedHeaders::X_FORWARDED_FOR));
        assert!(t.contains(TrustedHeaders::FORWARDED));
        assert!(!t.contains(TrustedHeaders::X_FORWARDED_BY));
        assert_eq!(TrustedHeaders::from_names(["nope"]), Err("nope".to_string()));
        assert!(TrustedHeaders::from_names(Vec::<String>::new()).unwrap().is_empty());
    }

    #[test]
    fn untrusted_peer_headers_are_removed_and_nothing_set() {
        let cfg = config(Some("10.0.0.1"), 1, &["x-forwarded-for", "x-forwarded-proto"]);
        let (set, h) = run(
            &cfg,
            &[
                ("HTTP_HOST", "example.com"),
                ("HTTP_X_FORWARDED_FOR", "1.2.3.4"),
                ("HTTP_X_FORWARDED_PROTO", "https"),
                ("HTTP_FORWARDED", "for=1.2.3.4"),
                ("HTTP_X_FORWARDED_BY", "p"),
            ],
        );
        assert!(set.is_empty());
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].key, "HTTP_HOST");
    }

    #[test]
    fn untrusted_kept_when_clear_off() {
        let mut cfg = config(Some("10.0.0.1"), 1, &["x-forwarded-for"]);
        cfg.clear_untrusted = false;
        cfg.log_untrusted = true;
        let mut h = hdrs(&[("HTTP_X_FORWARDED_FOR", "1.2.3.4")]);
        let a = cfg.apply(&mut h, "192.168.1.1", "1", "http", "80").unwrap();
        assert_eq!(a, Applied::default());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn no_trusted_proxy_clears_all_six() {
        let mut cfg = config(None, 1, &[]);
        cfg.log_untrusted = true;
        let mut h = hdrs(&[
            ("HTTP_FORWARDED", "for=a"),
            ("HTTP_X_FORWARDED_PORT", "1"),
            ("HTTP_X_FORWARDED_FOR", "a"),
            ("HTTP_X_FORWARDED_HOST", "a"),
            ("HTTP_X_FORWARDED_PROTO", "a"),
            ("HTTP_X_FORWARDED_BY", "a"),
            ("HTTP_X_OTHER", "a"),
        ]);
        let a = cfg.apply(&mut h, "127.0.0.1", "1", "http", "80").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(
            a.warnings,
            vec![
                "Removed untrusted headers (X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto, \
                 X-Forwarded-Port, X-Forwarded-By, Forwarded). Waitress recommends these be \
                 removed upstream."
                    .to_string()
            ]
        );
        // Nothing removed: no warning.
        let a = cfg.apply(&mut h, "127.0.0.1", "1", "http", "80").unwrap();
        assert!(a.warnings.is_empty());
    }

    #[test]
    fn trusted_headers_kept_others_removed_with_warning() {
        let mut cfg = config(Some("*"), 1, &["x-forwarded-for"]);
        cfg.log_untrusted = true;
        let mut h = hdrs(&[("HTTP_X_FORWARDED_FOR", "1.2.3.4"), ("HTTP_X_FORWARDED_PROTO", "https")]);
        let a = cfg.apply(&mut h, "9.9.9.9", "1", "http", "80").unwrap();
        assert_eq!(get(&a.set, "REMOTE_ADDR"), Some("1.2.3.4"));
        assert_eq!(get(&a.set, "wsgi.url_scheme"), None);
        assert_eq!(header(&h, "HTTP_X_FORWARDED_PROTO"), None);
        assert_eq!(header(&h, "HTTP_X_FORWARDED_FOR"), Some(&b"1.2.3.4"[..]));
        assert_eq!(
            a.warnings,
            vec![
                "Removed untrusted headers (X-Forwarded-Proto). Waitress recommends these be \
                 removed upstream."
                    .to_string()
            ]
        );
    }

    #[test]
    fn peer_must_match_exactly() {
        let cfg = config(Some("192.168.1.1"), 1, &["x-forwarded-for"]);
        let mut h = hdrs(&[("HTTP_X_FORWARDED_FOR", "1.2.3.4")]);
        let a = cfg.apply(&mut h, "192.168.1.10", "1", "http", "80").unwrap();
        assert!(a.set.is_empty());
        assert!(h.is_empty());
        let cfg = config(Some("localhost"), 1, &["x-forwarded-for"]);
        let mut h = hdrs(&[("HTTP_X_FORWARDED_FOR", "1.2.3.4")]);
        let a = cfg.apply(&mut h, "localhost", "None", "http", "/s").unwrap();
        assert_eq!(get(&a.set, "REMOTE_ADDR"), Some("1.2.3.4"));
    }

    #[test]
    fn x_forwarded_for_counts() {
        let cfg = config(Some("*"), 1, &["x-forwarded-for"]);
        let (set, h) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", "10.0.0.1, 192.0.2.1")]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("192.0.2.1"));
        assert_eq!(get(&set, "REMOTE_HOST"), Some("192.0.2.1"));
        assert_eq!(get(&set, "REMOTE_PORT"), None);
        // #452: only the trusted hops stay, joined with "," and stripped.
        assert_eq!(header(&h, "HTTP_X_FORWARDED_FOR"), Some(&b"192.0.2.1"[..]));

        let cfg = config(Some("*"), 2, &["x-forwarded-for"]);
        let (set, h) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", "198.51.100.2, 10.0.0.1, 192.0.2.1")]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("10.0.0.1"));
        assert_eq!(header(&h, "HTTP_X_FORWARDED_FOR"), Some(&b"10.0.0.1, 192.0.2.1"[..]));

        // More hops trusted than present: the first one.
        let cfg = config(Some("*"), 5, &["x-forwarded-for"]);
        let (set, h) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", "1.1.1.1,2.2.2.2")]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("1.1.1.1"));
        assert_eq!(header(&h, "HTTP_X_FORWARDED_FOR"), Some(&b"1.1.1.1,2.2.2.2"[..]));

        // Count 0 trusts every hop (Python's [-0:]).
        let cfg = config(Some("*"), 0, &["x-forwarded-for"]);
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", "1.1.1.1,2.2.2.2")]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("1.1.1.1"));
    }

    #[test]
    fn x_forwarded_for_ports_and_ipv6() {
        let cfg = config(Some("*"), 1, &["x-forwarded-for"]);
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", "192.0.2.1:3821")]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("192.0.2.1"));
        assert_eq!(get(&set, "REMOTE_PORT"), Some("3821"));
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", "2001:db8::1")]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("2001:db8::1"));
        assert_eq!(get(&set, "REMOTE_PORT"), None);
        // A bracketed address with a port is taken for a bare IPv6 address (Waitress's quirk).
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", "[2001:db8::1]:8443")]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("[2001:db8::1]:8443"));
        assert_eq!(get(&set, "REMOTE_PORT"), None);
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", "\"[2001:db8::1]\"")]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("2001:db8::1"));
        assert_eq!(get(&set, "REMOTE_HOST"), Some("2001:db8::1"));
        // An empty value changes nothing but is still trusted and rewritten.
        let (set, h) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", "")]);
        assert!(set.is_empty());
        assert_eq!(header(&h, "HTTP_X_FORWARDED_FOR"), Some(&b""[..]));
    }

    #[test]
    fn x_forwarded_for_bad_quoting() {
        let cfg = config(Some("*"), 1, &["x-forwarded-for"]);
        let e = err(&cfg, &[("HTTP_X_FORWARDED_FOR", "\"1.2.3.4")]);
        assert_eq!(e.status, 400);
        assert_eq!(e.detail, "Header \"X-Forwarded-For\" malformed.");
        assert_eq!(
            e.warnings,
            vec![
                "Malformed proxy header \"X-Forwarded-For\" from \"192.168.1.1\": Invalid quoting \
                 in value value: \"1.2.3.4"
                    .to_string()
            ]
        );
    }

    #[test]
    fn blank_client_address_is_a_crash() {
        let cfg = config(Some("*"), 1, &["x-forwarded-for"]);
        let e = err(&cfg, &[("HTTP_X_FORWARDED_FOR", "\" \"")]);
        assert_eq!(e.status, 500);
        let e = err(&cfg, &[("HTTP_X_FORWARDED_FOR", "\" :1.2\"")]);
        assert_eq!(e.status, 500);
        let cfg = config(Some("*"), 1, &["forwarded"]);
        let e = err(&cfg, &[("HTTP_FORWARDED", "for=\":80\"")]);
        assert_eq!(e.status, 500);
        // ":80" alone looks like IPv6 to X-Forwarded-For and gets brackets: no crash.
        let cfg = config(Some("*"), 1, &["x-forwarded-for"]);
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_FOR", ":80")]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some(":80"));
    }

    #[test]
    fn x_forwarded_host_and_port() {
        let cfg = config(Some("*"), 1, &["x-forwarded-host"]);
        let (set, h) = run(&cfg, &[("HTTP_X_FORWARDED_HOST", "a.example, example.com")]);
        assert_eq!(get(&set, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com"));
        assert_eq!(get(&set, "SERVER_PORT"), None);
        assert_eq!(header(&h, "HTTP_X_FORWARDED_HOST"), Some(&b"example.com"[..]));

        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_HOST", "example.com:8080")]);
        assert_eq!(get(&set, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com:8080"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("8080"));

        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_HOST", "[2001:db8::1]")]);
        assert_eq!(get(&set, "SERVER_NAME"), Some("[2001:db8::1]"));
        assert_eq!(get(&set, "HTTP_HOST"), Some("[2001:db8::1]"));

        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_HOST", "[2001:db8::1]:81")]);
        assert_eq!(get(&set, "SERVER_NAME"), Some("[2001:db8::1]"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("81"));

        let cfg = config(Some("*"), 2, &["x-forwarded-host"]);
        let (set, h) = run(&cfg, &[("HTTP_X_FORWARDED_HOST", "a, b.example ,c")]);
        assert_eq!(get(&set, "SERVER_NAME"), Some("b.example"));
        assert_eq!(header(&h, "HTTP_X_FORWARDED_HOST"), Some(&b"b.example ,c"[..]));

        let e = err(&cfg, &[("HTTP_X_FORWARDED_HOST", "a\"")]);
        assert_eq!(e.detail, "Header \"X-Forwarded-Host\" malformed.");
    }

    #[test]
    fn host_with_port_from_proto_and_port_headers() {
        let cfg = config(
            Some("*"),
            1,
            &["x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"],
        );
        let (set, _) = run(
            &cfg,
            &[
                ("HTTP_X_FORWARDED_HOST", "example.com"),
                ("HTTP_X_FORWARDED_PROTO", "https"),
            ],
        );
        assert_eq!(get(&set, "wsgi.url_scheme"), Some("https"));
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("443"));

        let (set, _) = run(
            &cfg,
            &[
                ("HTTP_X_FORWARDED_HOST", "example.com"),
                ("HTTP_X_FORWARDED_PROTO", "https"),
                ("HTTP_X_FORWARDED_PORT", "80"),
            ],
        );
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com:80"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("80"));

        let (set, _) = run(
            &cfg,
            &[
                ("HTTP_X_FORWARDED_HOST", "example.com"),
                ("HTTP_X_FORWARDED_PROTO", "http"),
                ("HTTP_X_FORWARDED_PORT", "443"),
            ],
        );
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com:443"));

        let (set, _) = run(
            &cfg,
            &[
                ("HTTP_X_FORWARDED_HOST", "example.com"),
                ("HTTP_X_FORWARDED_PORT", "8443"),
            ],
        );
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com:8443"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("8443"));
        assert_eq!(get(&set, "wsgi.url_scheme"), None);

        // Port 80 with the existing scheme http: no port in HTTP_HOST.
        let (set, _) = run(
            &cfg,
            &[
                ("HTTP_X_FORWARDED_HOST", "example.com"),
                ("HTTP_X_FORWARDED_PORT", "80"),
            ],
        );
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com"));

        // The port in the host beats X-Forwarded-Port; an empty one leaves SERVER_PORT alone.
        let (set, _) = run(
            &cfg,
            &[
                ("HTTP_X_FORWARDED_HOST", "example.com:81"),
                ("HTTP_X_FORWARDED_PORT", "82"),
            ],
        );
        assert_eq!(get(&set, "SERVER_PORT"), Some("81"));
        let (set, _) = run(
            &cfg,
            &[
                ("HTTP_X_FORWARDED_HOST", "example.com:"),
                ("HTTP_X_FORWARDED_PROTO", "https"),
            ],
        );
        assert_eq!(get(&set, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com:"));
        assert_eq!(get(&set, "SERVER_PORT"), None);
    }

    #[test]
    fn proto_and_port_values() {
        let cfg = config(Some("*"), 1, &["x-forwarded-proto", "x-forwarded-port"]);
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_PROTO", "\"HTTPS\"")]);
        assert_eq!(get(&set, "wsgi.url_scheme"), Some("https"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("443"));
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_PROTO", "http")]);
        assert_eq!(get(&set, "SERVER_PORT"), Some("80"));
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_PORT", "8080")]);
        assert_eq!(set, vec![("SERVER_PORT", "8080".to_string())]);

        let e = err(&cfg, &[("HTTP_X_FORWARDED_PROTO", "https,http")]);
        assert_eq!(e.detail, "Header \"X-Forwarded-Proto\" malformed.");
        assert_eq!(
            e.warnings,
            vec![
                "Malformed proxy header \"X-Forwarded-Proto\" from \"192.168.1.1\": Unspecified \
                 behavior for multiple values found in header value: https,http"
                    .to_string()
            ]
        );
        let e = err(&cfg, &[("HTTP_X_FORWARDED_PROTO", "gopher")]);
        assert_eq!(e.detail, "Header \"X-Forwarded-Proto\" malformed.");
        assert_eq!(
            e.warnings,
            vec![
                "Malformed proxy header \"X-Forwarded-Proto\" from \"192.168.1.1\": unsupported \
                 proto value value: gopher"
                    .to_string()
            ]
        );
        let e = err(&cfg, &[("HTTP_X_FORWARDED_PORT", "443,80")]);
        assert_eq!(e.detail, "Header \"X-Forwarded-Port\" malformed.");
        let e = err(&cfg, &[("HTTP_X_FORWARDED_PORT", "\"80")]);
        assert_eq!(e.detail, "Header \"X-Forwarded-Port\" malformed.");
        // Port is not validated further.
        let (set, _) = run(&cfg, &[("HTTP_X_FORWARDED_PORT", "abc")]);
        assert_eq!(get(&set, "SERVER_PORT"), Some("abc"));
    }

    #[test]
    fn four_x_forwarded_headers_together() {
        let names = [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
        ];
        let sent = [
            ("HTTP_X_FORWARDED_FOR", "192.0.2.1, 198.51.100.2, 203.0.113.1"),
            ("HTTP_X_FORWARDED_PROTO", "http"),
            ("HTTP_X_FORWARDED_HOST", "example.com, example.org"),
            ("HTTP_X_FORWARDED_PORT", "8080"),
        ];
        let (set, h) = run(&config(Some("*"), 2, &names), &sent);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("198.51.100.2"));
        assert_eq!(get(&set, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com:8080"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("8080"));
        assert_eq!(get(&set, "wsgi.url_scheme"), Some("http"));
        assert_eq!(
            header(&h, "HTTP_X_FORWARDED_FOR"),
            Some(&b"198.51.100.2, 203.0.113.1"[..])
        );
        assert_eq!(
            header(&h, "HTTP_X_FORWARDED_HOST"),
            Some(&b"example.com, example.org"[..])
        );
        let (set, h) = run(&config(Some("*"), 1, &names), &sent);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("203.0.113.1"));
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.org:8080"));
        assert_eq!(header(&h, "HTTP_X_FORWARDED_FOR"), Some(&b"203.0.113.1"[..]));
        assert_eq!(header(&h, "HTTP_X_FORWARDED_HOST"), Some(&b"example.org"[..]));
    }

    #[test]
    fn trusted_peer_with_no_trusted_headers() {
        let (set, h) = run(
            &config(Some("*"), 1, &[]),
            &[
                ("HTTP_HOST", "192.168.1.1:80"),
                ("HTTP_X_FORWARDED_FOR", "198.51.100.2"),
                ("HTTP_FORWARDED", "For=198.51.100.2;host=example.com:8080;proto=https"),
            ],
        );
        assert!(set.is_empty());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn x_forwarded_by_is_kept() {
        let cfg = config(Some("*"), 1, &["x-forwarded-by"]);
        let (set, h) = run(&cfg, &[("HTTP_X_FORWARDED_BY", "proxy"), ("HTTP_FORWARDED", "for=x")]);
        assert!(set.is_empty());
        assert_eq!(header(&h, "HTTP_X_FORWARDED_BY"), Some(&b"proxy"[..]));
        assert_eq!(header(&h, "HTTP_FORWARDED"), None);
    }

    #[test]
    fn forwarded_basic() {
        let cfg = config(Some("*"), 1, &["forwarded"]);
        let (set, h) = run(
            &cfg,
            &[(
                "HTTP_FORWARDED",
                "For=\"[2001:db8::1]:3821\";host=Example.com:8443;proto=HTTPS;by=_p",
            )],
        );
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("2001:db8::1"));
        assert_eq!(get(&set, "REMOTE_PORT"), Some("3821"));
        assert_eq!(get(&set, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&set, "HTTP_HOST"), Some("example.com:8443"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("8443"));
        assert_eq!(get(&set, "wsgi.url_scheme"), Some("https"));
        assert!(header(&h, "HTTP_FORWARDED").is_some());
    }

    #[test]
    fn forwarded_oldest_trusted_element_wins() {
        let value = "for=192.0.2.60;proto=https;host=client.example, for=198.51.100.17;\
                     host=mid.example:8080, for=10.0.0.1";
        let cfg = config(Some("*"), 2, &["forwarded"]);
        let (set, h) = run(&cfg, &[("HTTP_FORWARDED", value)]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("198.51.100.17"));
        assert_eq!(get(&set, "SERVER_NAME"), Some("mid.example"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("8080"));
        assert_eq!(get(&set, "wsgi.url_scheme"), None);
        assert_eq!(
            header(&h, "HTTP_FORWARDED"),
            Some(&b"for=198.51.100.17;host=mid.example:8080, for=10.0.0.1"[..])
        );
        let cfg = config(Some("*"), 3, &["forwarded"]);
        let (set, _) = run(&cfg, &[("HTTP_FORWARDED", value)]);
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("192.0.2.60"));
        assert_eq!(get(&set, "HTTP_HOST"), Some("client.example"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("443"));
        assert_eq!(get(&set, "wsgi.url_scheme"), Some("https"));
        let cfg = config(Some("*"), 1, &["forwarded"]);
        let (set, _) = run(&cfg, &[("HTTP_FORWARDED", value)]);
        assert_eq!(
            set,
            vec![
                ("REMOTE_ADDR", "10.0.0.1".to_string()),
                ("REMOTE_HOST", "10.0.0.1".to_string()),
            ]
        );
    }

    #[test]
    fn forwarded_clears_x_forwarded_and_drops_their_port() {
        // Not a combination Adjustments allows, but the middleware defines it.
        let cfg = config(Some("*"), 1, &["forwarded", "x-forwarded-for", "x-forwarded-port"]);
        let (set, h) = run(
            &cfg,
            &[
                ("HTTP_FORWARDED", "proto=https"),
                ("HTTP_X_FORWARDED_FOR", "1.2.3.4"),
                ("HTTP_X_FORWARDED_PORT", "8000"),
            ],
        );
        assert_eq!(get(&set, "REMOTE_ADDR"), Some("1.2.3.4"));
        assert_eq!(get(&set, "SERVER_PORT"), Some("443"));
        assert_eq!(h.len(), 1);
        // Without a Forwarded header the X-Forwarded-Port applies, but the header itself is
        // still cleared.
        let (set, h) = run(&cfg, &[("HTTP_X_FORWARDED_PORT", "8000")]);
        assert_eq!(get(&set, "SERVER_PORT"), Some("8000"));
        assert!(h.is_empty());
    }

    #[test]
    fn forwarded_malformed() {
        let cfg = config(Some("*"), 1, &["forwarded"]);
        for (value, reason) in [
            ("for", "Invalid forwarded-pair missing \"=\""),
            ("for =1.2.3.4", "Token may not be surrounded by whitespace"),
            ("for= 1.2.3.4", "Value may not be surrounded by whitespace"),
            ("for=\"1.2.3.4", "Invalid quoting in value"),
            ("for=\"1\"2\"", "Invalid quoting in value"),
            ("for=\"a\\\"", "Invalid quoting in value"),
        ] {
            let e = err(&cfg, &[("HTTP_FORWARDED", value)]);
            assert_eq!(e.status, 400, "{value}");
            assert_eq!(e.detail, "Header \"Forwarded\" malformed.");
            assert_eq!(
                e.warnings,
                vec![format!(
                    "Malformed proxy header \"Forwarded\" from \"192.168.1.1\": {reason} value: {value}"
                )]
            );
        }
        let e = err(&cfg, &[("HTTP_FORWARDED", "proto=gopher")]);
        assert_eq!(e.detail, "Header \"Forwarded Proto=\" malformed.");
        // Only trusted elements matter for the proto check, but all must parse.
        let cfg = config(Some("*"), 1, &["forwarded"]);
        let e = err(&cfg, &[("HTTP_FORWARDED", "for, for=1.2.3.4")]);
        assert_eq!(e.detail, "Header \"Forwarded\" malformed.");
    }

    #[test]
    fn forwarded_quoting_and_unknown_tokens() {
        let cfg = config(Some("*"), 1, &["forwarded"]);
        let mut h = hdrs(&[("HTTP_FORWARDED", "for=\"\\1.2.3.4\";secret=x;;Host=\"a\\\\b\"")]);
        let a = cfg.apply(&mut h, "1.1.1.1", "1", "http", "80").unwrap();
        assert_eq!(get(&a.set, "REMOTE_ADDR"), Some("1.2.3.4"));
        assert_eq!(get(&a.set, "SERVER_NAME"), Some("a\\b"));
        assert_eq!(a.warnings, vec!["Unknown Forwarded token: secret".to_string()]);
        // An unknown token's bad quoting is not checked; it is logged even when the request
        // then fails.
        let e = err(&cfg, &[("HTTP_FORWARDED", "x=\"; for")]);
        assert_eq!(e.warnings.len(), 2);
        assert_eq!(e.warnings[0], "Unknown Forwarded token: x");
        // An empty header is ignored (and kept).
        let (set, h) = run(&cfg, &[("HTTP_FORWARDED", "")]);
        assert!(set.is_empty());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn https_url_scheme_default_port_rules() {
        let cfg = config(Some("*"), 1, &["x-forwarded-host", "x-forwarded-port"]);
        let mut h = hdrs(&[
            ("HTTP_X_FORWARDED_HOST", "example.com"),
            ("HTTP_X_FORWARDED_PORT", "443"),
        ]);
        let a = cfg.apply(&mut h, "1.1.1.1", "1", "https", "80").unwrap();
        assert_eq!(get(&a.set, "HTTP_HOST"), Some("example.com"));
        let mut h = hdrs(&[
            ("HTTP_X_FORWARDED_HOST", "example.com"),
            ("HTTP_X_FORWARDED_PORT", "80"),
        ]);
        let a = cfg.apply(&mut h, "1.1.1.1", "1", "https", "80").unwrap();
        assert_eq!(get(&a.set, "HTTP_HOST"), Some("example.com:80"));
    }

    #[test]
    fn python_string_semantics() {
        assert_eq!(py_strip(b"\x1c\xa0 a b\x85\t"), b"a b");
        assert_eq!(py_strip(b" \xa0 "), b"");
        assert_eq!(py_lower(b"AZ\xc0\xd7\xde\xdf"), b"az\xe0\xd7\xfe\xdf");
        assert_eq!(latin1(b"\xe9"), "\u{e9}");
        assert_eq!(undquote(b""), Ok(Vec::new()));
        assert_eq!(undquote(b"\""), Err(()));
        assert_eq!(undquote(b"\"\""), Ok(Vec::new()));
        assert_eq!(undquote(b"a\""), Err(()));
        assert_eq!(undquote(b"\"a\\\"b\""), Ok(b"a\"b".to_vec()));
        assert_eq!(undquote(b"\"a\x7fb\""), Err(()));
        assert_eq!(undquote(b"\"a\\\x7fb\""), Err(()));
        assert_eq!(undquote(b"\"\xff\""), Ok(b"\xff".to_vec()));
        assert_eq!(tail(&[1, 2, 3], 0), &[1, 2, 3]);
        assert_eq!(tail(&[1, 2, 3], 2), &[2, 3]);
        assert_eq!(strip_brackets(b"[]"), Some(&b""[..]));
        assert_eq!(strip_brackets(b"["), Some(&b"["[..]));
    }

    #[test]
    fn latin1_values_reach_the_environ() {
        let cfg = config(Some("*"), 1, &["x-forwarded-host"]);
        let mut h = Headers::from_iter([Header {
            key: Cow::Borrowed("HTTP_X_FORWARDED_HOST"),
            value: b"caf\xe9.example".to_vec(),
        }]);
        let a = cfg.apply(&mut h, "1.1.1.1", "1", "http", "80").unwrap();
        assert_eq!(get(&a.set, "SERVER_NAME"), Some("caf\u{e9}.example"));
    }
}
