//! Python's string semantics on bytes, where Waitress's behaviour rests on them.
//!
//! Waitress parses with Python `bytes` methods (request heads) and, once header values are
//! latin-1 `str`s, with `str` methods (proxy headers). The two disagree on what whitespace is:
//! `bytes.isspace()` is ASCII only, `str.isspace()` also takes `\x1c`..`\x1f`, NEL (`\x85`) and
//! NBSP (`\xa0`). Each function here mirrors one Python expression, named after it, with the
//! latin-1 text held as its bytes (one byte per character), so nothing is decoded until a value
//! is handed back as text.

/// `bytes([b]).isspace()`: SP, HTAB, LF, VT, FF, CR.
#[inline]
pub(crate) fn bytes_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `s.rstrip()` for `bytes`: without the trailing [`bytes_isspace`] bytes.
pub(crate) fn bytes_rstrip(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| !bytes_isspace(b)).map_or(0, |i| i + 1);
    &s[..end]
}

/// `chr(b).isspace()`: Python's `str.isspace()` for the latin-1 character `b`.
#[inline]
pub(crate) fn str_isspace(b: u8) -> bool {
    matches!(b, 0x09..=0x0d | 0x1c..=0x20 | 0x85 | 0xa0)
}

/// `s.strip()` for latin-1 text: without the leading and trailing [`str_isspace`] characters.
pub(crate) fn str_strip(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !str_isspace(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !str_isspace(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// `s.lower()` for latin-1 text (`À`..`Þ` except `×` have lower-case forms in latin-1; `ß` and
/// `ÿ` have none there).
pub(crate) fn str_lower(s: &[u8]) -> Vec<u8> {
    s.iter()
        .map(|&b| match b {
            b'A'..=b'Z' | 0xc0..=0xd6 | 0xd8..=0xde => b + 0x20,
            _ => b,
        })
        .collect()
}

/// `b.decode("latin-1")`: one `char` per byte.
pub(crate) fn latin1_decode(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// `s.encode("latin-1")` appended to `out`; the first character beyond latin-1 is the error
/// (where Python raises `UnicodeEncodeError`). `out` keeps what was appended before it.
pub(crate) fn latin1_encode_into(out: &mut Vec<u8>, s: &str) -> Result<(), char> {
    for c in s.chars() {
        let code = u32::from(c);
        if code > 0xff {
            return Err(c);
        }
        out.push(code as u8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_as_python_sees_it() {
        // bytes(range(256)).isspace() per byte, and chr(i).isspace() for i < 256.
        let bytes_space: Vec<u8> = (0..=255u8).filter(|&b| bytes_isspace(b)).collect();
        assert_eq!(bytes_space, b"\t\n\x0b\x0c\r ");
        let str_space: Vec<u8> = (0..=255u8).filter(|&b| str_isspace(b)).collect();
        assert_eq!(str_space, b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0");
    }

    #[test]
    fn strips() {
        assert_eq!(bytes_rstrip(b"GET / HTTP/1.1 \t\x0b"), b"GET / HTTP/1.1");
        assert_eq!(bytes_rstrip(b"a\xa0\x85"), b"a\xa0\x85");
        assert_eq!(bytes_rstrip(b" \r\n"), b"");
        assert_eq!(bytes_rstrip(b""), b"");
        assert_eq!(str_strip(b"\x1c\xa0 a b\x85\t"), b"a b");
        assert_eq!(str_strip(b" \xa0 "), b"");
        assert_eq!(str_strip(b""), b"");
    }

    #[test]
    fn case_and_codecs() {
        assert_eq!(str_lower(b"AZ\xc0\xd7\xde\xdf"), b"az\xe0\xd7\xfe\xdf");
        assert_eq!(latin1_decode(b"caf\xe9"), "caf\u{e9}");
        let mut out = b"x".to_vec();
        assert_eq!(latin1_encode_into(&mut out, "caf\u{e9}"), Ok(()));
        assert_eq!(out, b"xcaf\xe9");
        assert_eq!(latin1_encode_into(&mut out, "a\u{263a}b"), Err('\u{263a}'));
        assert_eq!(out, b"xcaf\xe9a");
    }
}
