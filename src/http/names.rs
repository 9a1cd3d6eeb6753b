//! The request methods and header names common enough to be shared instead of allocated per
//! request: one table of each, read by the head parser (which hands them out as `&'static str`s)
//! and by the WSGI environ (which makes each a Python string once, interned, so that an app's
//! lookups match by identity).
//!
//! Each table is a macro that passes its rows to a macro of the caller's (as hyper's `http`
//! crate does for its standard headers), so every reader expands it into the `match` it needs
//! and no reader keeps a copy of the list. Rows come most frequent first.

/// Passes the common methods to `$callback!` as rows `(b"GET", "GET"), ...`: the method's bytes
/// as sent and the same text as a `str`.
macro_rules! common_methods {
    ($callback:ident) => {
        $callback! {
            (b"GET", "GET"),
            (b"POST", "POST"),
            (b"HEAD", "HEAD"),
            (b"PUT", "PUT"),
            (b"DELETE", "DELETE"),
            (b"PATCH", "PATCH"),
            (b"OPTIONS", "OPTIONS"),
        }
    };
}

/// Passes the common request headers to `$callback!` as rows `(b"USER_AGENT",
/// "HTTP_USER_AGENT"), ...`: the header name upper-cased with `-` turned into `_`, and its environ
/// key (`HTTP_` + that, except `CONTENT_TYPE` and `CONTENT_LENGTH`).
macro_rules! common_headers {
    ($callback:ident) => {
        $callback! {
            (b"HOST", "HTTP_HOST"),
            (b"USER_AGENT", "HTTP_USER_AGENT"),
            (b"ACCEPT", "HTTP_ACCEPT"),
            (b"ACCEPT_ENCODING", "HTTP_ACCEPT_ENCODING"),
            (b"ACCEPT_LANGUAGE", "HTTP_ACCEPT_LANGUAGE"),
            (b"CONNECTION", "HTTP_CONNECTION"),
            (b"COOKIE", "HTTP_COOKIE"),
            (b"REFERER", "HTTP_REFERER"),
            (b"CACHE_CONTROL", "HTTP_CACHE_CONTROL"),
            (b"AUTHORIZATION", "HTTP_AUTHORIZATION"),
            (b"ORIGIN", "HTTP_ORIGIN"),
            (b"X_FORWARDED_FOR", "HTTP_X_FORWARDED_FOR"),
            (b"X_FORWARDED_PROTO", "HTTP_X_FORWARDED_PROTO"),
            (b"X_REQUESTED_WITH", "HTTP_X_REQUESTED_WITH"),
            (b"IF_NONE_MATCH", "HTTP_IF_NONE_MATCH"),
            (b"IF_MODIFIED_SINCE", "HTTP_IF_MODIFIED_SINCE"),
            (b"UPGRADE_INSECURE_REQUESTS", "HTTP_UPGRADE_INSECURE_REQUESTS"),
            (b"SEC_FETCH_MODE", "HTTP_SEC_FETCH_MODE"),
            (b"SEC_FETCH_SITE", "HTTP_SEC_FETCH_SITE"),
            (b"SEC_FETCH_DEST", "HTTP_SEC_FETCH_DEST"),
            (b"CONTENT_TYPE", "CONTENT_TYPE"),
            (b"CONTENT_LENGTH", "CONTENT_LENGTH"),
            (b"ACCEPT_CHARSET", "HTTP_ACCEPT_CHARSET"),
            (b"KEEP_ALIVE", "HTTP_KEEP_ALIVE"),
            (b"CONTENT_ENCODING", "HTTP_CONTENT_ENCODING"),
            (b"TRANSFER_ENCODING", "HTTP_TRANSFER_ENCODING"),
            (b"TE", "HTTP_TE"),
            (b"EXPECT", "HTTP_EXPECT"),
            (b"PRAGMA", "HTTP_PRAGMA"),
            (b"UPGRADE", "HTTP_UPGRADE"),
            (b"PROXY_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION"),
            (b"FORWARDED", "HTTP_FORWARDED"),
            (b"X_FORWARDED_HOST", "HTTP_X_FORWARDED_HOST"),
            (b"X_FORWARDED_PORT", "HTTP_X_FORWARDED_PORT"),
            (b"X_FORWARDED_BY", "HTTP_X_FORWARDED_BY"),
            (b"X_REAL_IP", "HTTP_X_REAL_IP"),
            (b"X_REQUEST_ID", "HTTP_X_REQUEST_ID"),
            (b"X_CSRFTOKEN", "HTTP_X_CSRFTOKEN"),
            (b"X_CSRF_TOKEN", "HTTP_X_CSRF_TOKEN"),
            (b"IF_MATCH", "HTTP_IF_MATCH"),
            (b"IF_UNMODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE"),
            (b"IF_RANGE", "HTTP_IF_RANGE"),
            (b"RANGE", "HTTP_RANGE"),
            (b"DNT", "HTTP_DNT"),
            (b"VIA", "HTTP_VIA"),
            (b"DATE", "HTTP_DATE"),
            (b"SEC_FETCH_USER", "HTTP_SEC_FETCH_USER"),
            (b"SEC_CH_UA", "HTTP_SEC_CH_UA"),
            (b"SEC_CH_UA_MOBILE", "HTTP_SEC_CH_UA_MOBILE"),
            (b"SEC_CH_UA_PLATFORM", "HTTP_SEC_CH_UA_PLATFORM"),
            (b"SEC_WEBSOCKET_KEY", "HTTP_SEC_WEBSOCKET_KEY"),
            (b"SEC_WEBSOCKET_VERSION", "HTTP_SEC_WEBSOCKET_VERSION"),
            (b"PRIORITY", "HTTP_PRIORITY"),
        }
    };
}

// By path for the WSGI environ (built with the `python` feature).
#[cfg_attr(not(feature = "python"), allow(unused_imports))]
pub(crate) use {common_headers, common_methods};

/// The shared text of a common method (`None` for any other).
pub(crate) fn method(bytes: &[u8]) -> Option<&'static str> {
    macro_rules! lookup {
        ($(($bytes:literal, $text:literal),)*) => {
            match bytes {
                $($bytes => Some($text),)*
                _ => None,
            }
        };
    }
    common_methods!(lookup)
}

/// The shared environ key of a common header, from its name upper-cased with `-` turned into
/// `_` (`None` for any other).
pub(crate) fn header_key(normalized: &[u8]) -> Option<&'static str> {
    macro_rules! lookup {
        ($(($name:literal, $key:literal),)*) => {
            match normalized {
                $($name => Some($key),)*
                _ => None,
            }
        };
    }
    common_headers!(lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! rows {
        ($(($a:literal, $b:literal),)*) => {
            vec![$((&$a[..], $b)),*]
        };
    }

    #[test]
    fn methods_are_their_own_text() {
        let rows: Vec<(&[u8], &str)> = common_methods!(rows);
        for (bytes, text) in &rows {
            assert_eq!(*bytes, text.as_bytes());
            assert_eq!(method(bytes), Some(*text));
        }
        assert_eq!(method(b"get"), None);
        assert_eq!(method(b"PROPFIND"), None);
    }

    #[test]
    fn header_keys_follow_the_environ_rule() {
        let rows: Vec<(&[u8], &str)> = common_headers!(rows);
        let mut seen = std::collections::HashSet::new();
        for (name, key) in &rows {
            assert!(seen.insert(*key), "{key} twice");
            assert!(name
                .iter()
                .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'));
            let want = match *name {
                b"CONTENT_TYPE" | b"CONTENT_LENGTH" => String::from_utf8(name.to_vec()).unwrap(),
                _ => format!("HTTP_{}", String::from_utf8(name.to_vec()).unwrap()),
            };
            assert_eq!(*key, want);
            assert_eq!(header_key(name), Some(*key));
        }
        assert_eq!(rows.len(), 53);
        assert_eq!(header_key(b"X_ODD"), None);
        assert_eq!(header_key(b"host"), None);
    }
}
