//! The byte classes of HTTP/1.1's grammar (RFC 9110 §5.6) that the parser and the decoders
//! test bytes against: `tchar`, field-value bytes, `qdtext` and the escaped byte of a
//! `quoted-pair`.
//!
//! The classes tested for every byte of a head are tables built at compile time (one lookup per
//! byte); the quoted-string ones (met only inside chunk extensions and proxy headers) are defined
//! from them.

/// `tchar` for every byte value.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        i += 1;
    }
    table
};

/// The bytes allowed in a field value (VCHAR, obs-text, SP and HTAB), for every byte value.
const FIELD_VALUE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b == b' ' || b == b'\t' || (b >= 0x21 && b != 0x7f);
        i += 1;
    }
    table
};

/// `tchar`: a byte of a token (a method, a header name, a chunk-extension name).
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// A byte allowed in a field value: VCHAR, obs-text, SP or HTAB.
#[inline]
pub(crate) fn is_field_value(b: u8) -> bool {
    FIELD_VALUE[b as usize]
}

/// `OWS` (optional whitespace): SP or HTAB. Also what starts an obs-fold continuation line.
#[inline]
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `qdtext`: a byte that stands for itself inside a quoted-string (HTAB, SP, VCHAR other than
/// `"` and `\`, obs-text).
#[inline]
pub(crate) fn is_qdtext(b: u8) -> bool {
    is_field_value(b) && b != b'"' && b != b'\\'
}

/// The byte after the backslash of a `quoted-pair` (HTAB, SP, VCHAR, obs-text: the bytes of a
/// field value).
#[inline]
pub(crate) fn is_quoted_pair_char(b: u8) -> bool {
    is_field_value(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_the_grammar() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "{b}");
            let vchar = (0x21..=0x7e).contains(&b);
            let obs_text = b >= 0x80;
            let ows = b == b' ' || b == b'\t';
            assert_eq!(is_ows(b), ows, "{b}");
            assert_eq!(is_field_value(b), ows || vchar || obs_text, "{b}");
            assert_eq!(is_quoted_pair_char(b), ows || vchar || obs_text, "{b}");
            assert_eq!(
                is_qdtext(b),
                (ows || vchar || obs_text) && b != b'"' && b != b'\\',
                "{b}"
            );
        }
    }
}
