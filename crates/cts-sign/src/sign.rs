//! Client side: produce the `Authorization` header the SDK would send.

use crate::canonical::{self, hmac_sha256, py_strip};
use crate::date::{format_sdk_date, parse_sdk_date};
use crate::{RequestParts, SignError, ALGORITHM, AUTHORIZATION_HEADER, DATE_HEADER, HOST_HEADER};

/// Signs `parts` like `huaweicloudsdkcore`'s `Signer.sign` and returns the
/// `Authorization` header value
/// (`SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex`).
///
/// `parts.headers` must already hold the `Host` header exactly as it will be
/// sent (with the port if it is not the scheme's default) and the
/// `X-Sdk-Date` to sign with (see [`format_sdk_date`]); [`sign_request`] adds
/// both for you. Like the SDK, every header whose name contains no `_` is
/// signed (names lower-cased and sorted), except `Authorization` itself.
/// `parts.body` must be the exact bytes that will be sent.
///
/// Errors: [`SignError::MissingHeader`] without `Host` or `X-Sdk-Date`,
/// [`SignError::BadDate`] if `X-Sdk-Date` is not `YYYYMMDDTHHMMSSZ`,
/// [`SignError::DuplicateHeader`] if a header to sign occurs twice (the SDK
/// keeps headers in a dict, so it never sends duplicates, and the verifier
/// refuses them).
pub fn sign(
    parts: &RequestParts<'_>,
    access_key: &str,
    secret_key: &str,
) -> Result<String, SignError> {
    let mut names: Vec<String> = parts
        .headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|name| !name.contains('_') && name != "authorization")
        .collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(SignError::DuplicateHeader(pair[0].clone()));
    }
    for (lower, display) in [("host", HOST_HEADER), ("x-sdk-date", DATE_HEADER)] {
        if names.binary_search_by(|n| n.as_str().cmp(lower)).is_err() {
            return Err(SignError::MissingHeader(display.to_string()));
        }
    }
    let date = py_strip(
        parts
            .header(DATE_HEADER)?
            .ok_or_else(|| SignError::MissingHeader(DATE_HEADER.to_string()))?,
    );
    parse_sdk_date(date)?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let canonical = canonical::build(parts, &names)?;
    let signature = hmac_sha256(
        secret_key,
        &canonical::string_to_sign(date, &canonical.request),
    );
    Ok(format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={}, Signature={}",
        names.join(";"),
        hex::encode(signature)
    ))
}

/// Convenience for HTTP clients (reqwest): signs a request about to be sent
/// and adds the headers that make it verifiable.
///
/// * `url` is what the client will request: an absolute `http(s)://host[:port]/path?query`
///   URL, or an origin-form `/path?query` (then `headers` must hold `Host`).
///   Any percent-encoding of path and query works, since both sides
///   canonicalize (decode, then re-encode) — but `+` stays a literal plus
///   (encode a space as `%20`), and the path must not contain `.`/`..`
///   segments (URL parsers resolve them before sending, and then the server
///   sees another path).
/// * `headers` are the headers to send; all of them except those with `_` in
///   the name are signed. Any `X-Sdk-Date` and `Authorization` already there
///   are replaced (so a retry can be re-signed); `Host` is added from the URL
///   if missing (lower-cased, user info and the scheme's default port
///   dropped, as reqwest/hyper send it).
/// * `body` must be the exact bytes sent (serialize JSON yourself and send it
///   with `.body(bytes)`).
///
/// Afterwards send **every** header of `headers`, including `Host`. Headers the
/// HTTP client adds on its own (`Content-Length`, `Accept`, …) are unsigned,
/// which is fine as long as they do not replace a signed one.
pub fn sign_request(
    method: &str,
    url: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
    access_key: &str,
    secret_key: &str,
    now_unix: i64,
) -> Result<(), SignError> {
    let target = split_url(url)?;
    headers.retain(|(name, _)| {
        !name.eq_ignore_ascii_case(DATE_HEADER) && !name.eq_ignore_ascii_case(AUTHORIZATION_HEADER)
    });
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(HOST_HEADER))
    {
        let host = target
            .host
            .ok_or_else(|| SignError::MissingHeader(HOST_HEADER.to_string()))?;
        headers.push((HOST_HEADER.to_string(), host));
    }
    headers.push((DATE_HEADER.to_string(), format_sdk_date(now_unix)));
    let authorization = {
        let parts = RequestParts {
            method,
            path: target.path,
            query: target.query,
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
            body,
        };
        sign(&parts, access_key, secret_key)?
    };
    headers.push((AUTHORIZATION_HEADER.to_string(), authorization));
    Ok(())
}

struct Target<'a> {
    host: Option<String>,
    path: &'a str,
    query: Option<&'a str>,
}

fn split_url(url: &str) -> Result<Target<'_>, SignError> {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let (host, rest) = if url.starts_with('/') {
        (None, url)
    } else {
        let (scheme, after) = url.split_once("://").ok_or_else(|| {
            SignError::BadUrl(format!(
                "`{}` is neither an absolute http(s) URL nor a path starting with `/`",
                crate::excerpt(url)
            ))
        })?;
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let host = normalize_host(scheme, &after[..end]);
        if host.is_empty() {
            return Err(SignError::BadUrl(format!(
                "`{}` has no host",
                crate::excerpt(url)
            )));
        }
        (Some(host), &after[end..])
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    Ok(Target {
        host,
        path: if path.is_empty() { "/" } else { path },
        query,
    })
}

/// The `Host` header a client sends for this URL authority.
fn normalize_host(scheme: &str, authority: &str) -> String {
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut host = host.to_ascii_lowercase();
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        Some(":80")
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(":443")
    } else {
        None
    };
    if let Some(port) = default_port {
        if host.ends_with(port) {
            host.truncate(host.len() - port.len());
        }
    }
    if host.ends_with(':') {
        host.pop();
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (Option<String>, &str, Option<&str>) {
        let t = split_url(url).unwrap();
        (t.host, t.path, t.query)
    }

    #[test]
    fn urls() {
        assert_eq!(
            split("http://127.0.0.1:8080/v3/p/traces?limit=10&next="),
            (
                Some("127.0.0.1:8080".into()),
                "/v3/p/traces",
                Some("limit=10&next=")
            )
        );
        assert_eq!(
            split("http://Example.COM:80"),
            (Some("example.com".into()), "/", None)
        );
        assert_eq!(
            split("https://u:p@h:443?x=1#frag"),
            (Some("h".into()), "/", Some("x=1"))
        );
        assert_eq!(
            split("https://[::1]:8443/a#f?g"),
            (Some("[::1]:8443".into()), "/a", None)
        );
        assert_eq!(split("http://h:8080/"), (Some("h:8080".into()), "/", None));
        assert_eq!(split("http://h:/a"), (Some("h".into()), "/a", None));
        assert_eq!(split("/a/b?c"), (None, "/a/b", Some("c")));
        assert!(matches!(split_url("a/b"), Err(SignError::BadUrl(_))));
        assert!(matches!(split_url("http:///a"), Err(SignError::BadUrl(_))));
    }
}
