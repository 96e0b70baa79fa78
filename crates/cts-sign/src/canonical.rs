//! The canonical request, string to sign and signature, exactly as
//! `huaweicloudsdkcore/signer/signer.py` builds them, but computed from the
//! request as it appears on the wire.

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use crate::{
    RequestParts, SignError, ALGORITHM, CONTENT_SHA256_HEADER, EMPTY_PAYLOAD_SHA256,
    UNSIGNED_PAYLOAD,
};

/// Everything Python's `quote(s, safe='~')` encodes: all bytes except
/// `A-Za-z0-9-._~` (the RFC 3986 unreserved set). Hex digits come out upper
/// case, as in Python.
const ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The canonical URI of a raw (percent-encoded, as received) path: fully
/// percent-decoded, split on `/`, each segment re-encoded with only the
/// unreserved set left as is, joined with `/`, and a `/` appended if it does
/// not end with one. An encoded slash (`%2F`) therefore signs as a real `/`,
/// and `%7E`/`~`, `%20`/space, `%41`/`A` all sign alike.
///
/// Invalid escapes (`%zz`, a trailing `%`) stay literal, as in Python's
/// `unquote`. Decoded bytes that are not UTF-8 are re-encoded byte for byte
/// (Python would substitute U+FFFD; the SDK never produces such paths since it
/// encodes `str` values).
pub fn canonical_uri(raw_path: &str) -> String {
    let decoded: Vec<u8> = percent_decode_str(raw_path).collect();
    let mut out = String::with_capacity(decoded.len() + 1);
    for (i, segment) in decoded.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(percent_encode(segment, ENCODE_SET));
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query string of a raw query (without the `?`): items split on
/// `&` (empty items skipped), each split on its first `=` (no `=` → empty
/// value), key and value percent-decoded **without** turning `+` into a space,
/// pairs sorted by (key bytes, value bytes) — Python's code-point order for
/// UTF-8 — then re-encoded like path segments and joined with `&`.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = raw_query
        .unwrap_or("")
        .split('&')
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            (
                percent_decode_str(key).collect(),
                percent_decode_str(value).collect(),
            )
        })
        .collect();
    pairs.sort_unstable();
    let mut out = String::with_capacity(raw_query.map_or(0, str::len));
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.extend(percent_encode(key, ENCODE_SET));
        out.push('=');
        out.extend(percent_encode(value, ENCODE_SET));
    }
    out
}

/// Python's `str.strip()` with no argument: Unicode white space plus the
/// separators U+001C..U+001F, which Rust's `char::is_whitespace` omits.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Lower-case hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A canonical request and what its payload hash covers.
pub(crate) struct Canonical {
    pub request: String,
    /// `UNSIGNED-PAYLOAD` stood in for the hash of a non-empty body.
    pub unsigned_payload: bool,
}

pub(crate) fn build(
    parts: &RequestParts<'_>,
    signed_headers: &[&str],
) -> Result<Canonical, SignError> {
    let mut request = String::with_capacity(512);
    request.push_str(&parts.method.to_ascii_uppercase());
    request.push('\n');
    request.push_str(&canonical_uri(parts.path));
    request.push('\n');
    request.push_str(&canonical_query(parts.query));
    request.push('\n');
    for &name in signed_headers {
        let value = parts
            .header(name)?
            .ok_or_else(|| SignError::MissingHeader(name.to_string()))?;
        request.push_str(name);
        request.push(':');
        request.push_str(py_strip(value));
        request.push('\n');
    }
    request.push('\n');
    request.push_str(&signed_headers.join(";"));
    request.push('\n');
    // The SDK: empty body → hash of empty; else the X-Sdk-Content-Sha256 value
    // if that header is present; else sha256(body). We honour the header only
    // when it is signed and says UNSIGNED-PAYLOAD: any other value would let a
    // client claim an arbitrary hash, so the real one is used instead (an
    // honest client's claimed hash equals it anyway).
    let mut unsigned_payload = false;
    if parts.body.is_empty() {
        request.push_str(EMPTY_PAYLOAD_SHA256);
    } else if signed_headers
        .iter()
        .any(|n| n.eq_ignore_ascii_case(CONTENT_SHA256_HEADER))
        && parts
            .header(CONTENT_SHA256_HEADER)?
            .is_some_and(|v| py_strip(v) == UNSIGNED_PAYLOAD)
    {
        unsigned_payload = true;
        request.push_str(UNSIGNED_PAYLOAD);
    } else {
        request.push_str(&sha256_hex(parts.body));
    }
    Ok(Canonical {
        request,
        unsigned_payload,
    })
}

/// The canonical request for `parts` covering `signed_headers` (names as they
/// appear in `SignedHeaders`, i.e. lower case; looked up case-insensitively):
///
/// ```text
/// METHOD\nCanonicalURI\nCanonicalQuery\nname:value\n…\n\nSignedHeaders\nPayloadHash
/// ```
///
/// Fails with [`SignError::MissingHeader`] / [`SignError::DuplicateHeader`] if a
/// signed header is absent from or repeated in the request. Public for
/// debugging and tests.
pub fn canonical_request(
    parts: &RequestParts<'_>,
    signed_headers: &[&str],
) -> Result<String, SignError> {
    build(parts, signed_headers).map(|c| c.request)
}

/// `"SDK-HMAC-SHA256\n" + sdk_date + "\n" + hex(sha256(canonical_request))`.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// HMAC-SHA256 keyed with the secret key's UTF-8 bytes, used directly (no
/// derivation).
pub(crate) fn hmac_sha256(secret_key: &str, string_to_sign: &str) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(string_to_sign.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a/b"), "/a/b/");
        assert_eq!(canonical_uri("/a/b/"), "/a/b/");
        assert_eq!(canonical_uri("//a"), "//a/");
        assert_eq!(canonical_uri("/a%2Fb"), "/a/b/");
        assert_eq!(canonical_uri("/a%2fb"), "/a/b/");
        assert_eq!(canonical_uri("/%41%7e~-._"), "/A~~-._/");
        assert_eq!(canonical_uri("/a b+c"), "/a%20b%2Bc/");
        assert_eq!(canonical_uri("/a%20b%2Bc"), "/a%20b%2Bc/");
        assert_eq!(canonical_uri("/ä"), "/%C3%A4/");
        assert_eq!(canonical_uri("/%c3%a4"), "/%C3%A4/");
        assert_eq!(canonical_uri("/%FF"), "/%FF/");
        assert_eq!(canonical_uri("/%zz%"), "/%25zz%25/");
        assert_eq!(canonical_uri("/%252F"), "/%252F/");
        assert_eq!(
            canonical_uri("/*@:!$&'()=,;"),
            "/%2A%40%3A%21%24%26%27%28%29%3D%2C%3B/"
        );
    }

    #[test]
    fn query() {
        assert_eq!(canonical_query(None), "");
        assert_eq!(canonical_query(Some("")), "");
        assert_eq!(canonical_query(Some("&&")), "");
        assert_eq!(canonical_query(Some("b=2&a=1")), "a=1&b=2");
        assert_eq!(canonical_query(Some("a=2&a=1&a=10")), "a=1&a=10&a=2");
        assert_eq!(canonical_query(Some("flag")), "flag=");
        assert_eq!(canonical_query(Some("next=")), "next=");
        assert_eq!(canonical_query(Some("a=b=c")), "a=b%3Dc");
        assert_eq!(canonical_query(Some("a=x+y")), "a=x%2By");
        assert_eq!(canonical_query(Some("a=x%20y")), "a=x%20y");
        assert_eq!(canonical_query(Some("a=x y")), "a=x%20y");
        // Sorted on decoded values: 'é' (U+00E9) > 'z', although "%C3" < "z".
        assert_eq!(canonical_query(Some("k=%C3%A9&k=z")), "k=z&k=%C3%A9");
        // Key first, then value; a prefix sorts first.
        assert_eq!(canonical_query(Some("ab=1&a=2")), "a=2&ab=1");
        assert_eq!(canonical_query(Some("a%3Db=1")), "a%3Db=1");
    }

    #[test]
    fn strip() {
        assert_eq!(py_strip("  a b \t"), "a b");
        assert_eq!(py_strip("\u{1c}\u{a0}a\u{3000}"), "a");
        assert_eq!(py_strip(""), "");
    }
}
