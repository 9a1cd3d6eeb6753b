//! Trusted proxy headers (`Forwarded`, `X-Forwarded-*`) applied to a request exactly as Waitress
//! 3.0.2's `proxy_headers_middleware` applies them to the environ, sans-IO.
//!
//! The middleware works on the environ, and so does this module, on its part of it: the request's
//! headers as the parser keys them (`HTTP_X_FORWARDED_FOR`, ...) are rewritten or removed in
//! place, and what the middleware would set in the environ (`REMOTE_ADDR`, `wsgi.url_scheme`,
//! ...) comes back as key/value pairs in [`Applied`] for the WSGI layer to set.
//!
//! Header values are latin-1 bytes, and every Python `str` operation the middleware performs on
//! them (`strip()`, `lower()`, `split(",")`, `rsplit(":", 1)`, `partition("=")`) maps one to one
//! onto bytes (`http::pystr`), so the work is done on `&[u8]` and only the results handed back as
//! environ values are decoded into `String`s.
//!
//! - this file: the configuration, the outcome types, the order the middleware works in, and the
//!   environ values it derives from what the trusted headers said;
//! - `x_forwarded`: the five `X-Forwarded-*` headers;
//! - `forwarded`: the RFC 7239 `Forwarded` header.

mod forwarded;
mod x_forwarded;

#[cfg(test)]
mod tests;

use super::chars::{is_qdtext, is_quoted_pair_char};
use super::pystr::{latin1_decode, str_lower, str_strip};
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
    /// `X-Forwarded-For`: the client's address (and port), hop by hop.
    pub const X_FORWARDED_FOR: TrustedHeaders = TrustedHeaders(1);
    /// `X-Forwarded-Host`: the host the client asked for, hop by hop.
    pub const X_FORWARDED_HOST: TrustedHeaders = TrustedHeaders(1 << 1);
    /// `X-Forwarded-Proto`: the client's scheme (one value).
    pub const X_FORWARDED_PROTO: TrustedHeaders = TrustedHeaders(1 << 2);
    /// `X-Forwarded-Port`: the port the client connected to (one value).
    pub const X_FORWARDED_PORT: TrustedHeaders = TrustedHeaders(1 << 3);
    /// `X-Forwarded-By`: kept for the app, used for nothing here.
    pub const X_FORWARDED_BY: TrustedHeaders = TrustedHeaders(1 << 4);
    /// `Forwarded` (RFC 7239): `for`, `host` and `proto` of each hop.
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

/// The reason of a `MalformedProxyHeader` for a value [`undquote`] rejects.
const INVALID_QUOTING: &str = "Invalid quoting in value";

/// What the trusted headers say about the client's request: the middleware's local variables of
/// the same names, as latin-1 bytes (empty: not said).
#[derive(Debug, Default)]
struct Origin {
    client_addr: Vec<u8>,
    host: Vec<u8>,
    proto: Vec<u8>,
    port: Vec<u8>,
}

impl ProxyConfig {
    /// Apply the proxy headers of one request, as the middleware does to the environ.
    ///
    /// `headers` are the request's environ-keyed headers: trusted ones are rewritten in place
    /// (`HTTP_X_FORWARDED_FOR`, `HTTP_X_FORWARDED_HOST` and `HTTP_FORWARDED` keep only the
    /// trusted hops) and, with `clear_untrusted`, the untrusted ones are removed. `remote_addr`
    /// is `REMOTE_ADDR` (`localhost` on a Unix socket), `url_scheme` the scheme before any
    /// forwarded proto.
    pub fn apply(&self, headers: &mut Headers, remote_addr: &str, url_scheme: &str) -> Result<Applied, ProxyError> {
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
                        latin1_decode(&value)
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
        let mut origin = Origin::default();
        x_forwarded::read(headers, trusted, count, &mut origin, &mut untrusted)?;
        let mut forwarded_trusted = false;
        if trusted.contains(TrustedHeaders::FORWARDED) {
            // Trusting `Forwarded` distrusts every X-Forwarded-* header, even trusted ones.
            untrusted = TrustedHeaders::ALL;
            untrusted.remove(TrustedHeaders::FORWARDED);
            forwarded_trusted = forwarded::read(headers, count, &mut origin, &mut applied.warnings)?;
        }
        set_environ(origin, forwarded_trusted, url_scheme, applied)?;
        Ok(untrusted)
    }
}

/// The end of `parse_proxy_headers`: the environ values that follow from what the trusted
/// headers said (`wsgi.url_scheme`, `SERVER_NAME`, `HTTP_HOST`, `SERVER_PORT`, `REMOTE_ADDR`,
/// `REMOTE_PORT`, `REMOTE_HOST`), recorded in `applied`.
fn set_environ(origin: Origin, forwarded_trusted: bool, url_scheme: &str, applied: &mut Applied) -> Result<(), Fail> {
    let Origin {
        client_addr,
        host,
        proto,
        mut port,
    } = origin;
    let mut scheme = url_scheme.to_string();
    if !proto.is_empty() {
        let proto = str_lower(&proto);
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
        scheme = latin1_decode(&proto);
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
            set(applied, "SERVER_NAME", latin1_decode(str_strip(name)));
            set(applied, "HTTP_HOST", latin1_decode(&host));
        } else {
            set(applied, "SERVER_NAME", latin1_decode(&host));
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
            set(applied, "HTTP_HOST", latin1_decode(&value));
        }
    }

    if !port.is_empty() {
        set(applied, "SERVER_PORT", latin1_decode(&port));
    }

    if !client_addr.is_empty() {
        let addr = if client_addr.contains(&b':') && client_addr.last() != Some(&b']') {
            let (addr, remote_port) = rsplit_colon(&client_addr);
            let addr = strip_brackets(str_strip(addr)).ok_or(Fail::Crash)?;
            set(applied, "REMOTE_ADDR", latin1_decode(addr));
            set(applied, "REMOTE_PORT", latin1_decode(str_strip(remote_port)));
            addr
        } else {
            let addr = strip_brackets(str_strip(&client_addr)).ok_or(Fail::Crash)?;
            set(applied, "REMOTE_ADDR", latin1_decode(addr));
            addr
        };
        set(applied, "REMOTE_HOST", latin1_decode(addr));
    }
    Ok(())
}

/// The header with environ key `key`.
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

/// Python's `items[-count:]` for `count >= 0` (`[-0:]` is the whole list): the trusted hops.
fn tail<T>(items: &[T], count: usize) -> &[T] {
    if count == 0 || count >= items.len() {
        items
    } else {
        &items[items.len() - count..]
    }
}

/// `",".join(raw[-count:]).strip()`: a hop-by-hop header cut down to the trusted hops.
fn join_tail(raw: &[&[u8]], count: usize) -> Vec<u8> {
    str_strip(&tail(raw, count).join(&b","[..])).to_vec()
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
