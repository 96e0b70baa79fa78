//! Server side: parse `Authorization`, rebuild the canonical request from the
//! wire request and compare signatures in constant time.

use subtle::ConstantTimeEq;

use crate::canonical::{self, hmac_sha256, py_strip};
use crate::date::{check_date, parse_sdk_date};
use crate::{excerpt, RequestParts, SignError, ALGORITHM, AUTHORIZATION_HEADER, DATE_HEADER};

/// The headers a signature must cover for us to accept it.
///
/// * `x-sdk-date`: the date is only trustworthy if signed; an unsigned date
///   could be refreshed by anyone, making a captured request replayable
///   forever and defeating the freshness window of [`check_date`].
/// * `host`: binds the signature to this service's address, so a request
///   signed for another endpoint (another deployment using the same keys)
///   cannot be replayed here.
///
/// The SDK always signs both.
pub const REQUIRED_SIGNED_HEADERS: [&str; 2] = ["host", "x-sdk-date"];

/// A parsed `Authorization: SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// The access key (AK) naming the secret key to verify with.
    pub access_key: &'a str,
    /// The signed header names, lower case, in their `SignedHeaders` order.
    pub signed_headers: Vec<&'a str>,
    /// The signature: 64 hex digits.
    pub signature: &'a str,
}

/// What a successful verification established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Verified {
    /// The request had a non-empty body and a signed
    /// `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`, so the signature does **not**
    /// cover the body: anyone who captured the request could replay it with
    /// another body within the date window. The SDK does this only for
    /// content types other than JSON/BSON, never for CTS operations; a
    /// server that takes bodies should refuse it
    /// ([`Verified::require_signed_payload`]).
    pub unsigned_payload: bool,
}

impl Verified {
    /// Fails with [`SignError::UnsignedPayload`] if the body was not signed.
    pub fn require_signed_payload(self) -> Result<Self, SignError> {
        if self.unsigned_payload {
            Err(SignError::UnsignedPayload)
        } else {
            Ok(self)
        }
    }
}

/// A request authenticated by [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Authenticated<'a> {
    /// The verified `Authorization` header (its `access_key` is the caller).
    pub authorization: Authorization<'a>,
    /// See [`Verified::unsigned_payload`].
    pub unsigned_payload: bool,
}

impl Authenticated<'_> {
    /// Fails with [`SignError::UnsignedPayload`] if the body was not signed.
    pub fn require_signed_payload(self) -> Result<Self, SignError> {
        if self.unsigned_payload {
            Err(SignError::UnsignedPayload)
        } else {
            Ok(self)
        }
    }
}

/// Parses an `Authorization` header value.
///
/// Tolerant of extra white space around the algorithm, the fields, `,` and
/// `=`; strict about everything else: the algorithm must be exactly
/// `SDK-HMAC-SHA256` ([`SignError::UnsupportedAlgorithm`] otherwise, e.g. for
/// the SDK's opt-in `V11-HMAC-SHA256`), and `Access`, `SignedHeaders` and
/// `Signature` (these spellings) must each appear exactly once, non-empty,
/// with nothing else. `SignedHeaders` must be `;`-separated lower-case header
/// names without duplicates, `Signature` 64 hex digits.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, SignError> {
    let malformed = |what: String| SignError::MalformedAuthorization(what);
    let value = value.trim();
    let (algorithm, rest) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(SignError::UnsupportedAlgorithm(excerpt(algorithm)));
    }
    if rest.trim().is_empty() {
        return Err(malformed(
            "no Access, SignedHeaders and Signature fields".into(),
        ));
    }
    let (mut access, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let field = field.trim();
        let (key, val) = field
            .split_once('=')
            .ok_or_else(|| malformed(format!("field `{}` is not name=value", excerpt(field))))?;
        let (key, val) = (key.trim(), val.trim());
        let slot = match key {
            "Access" => &mut access,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(malformed(format!("unknown field `{}`", excerpt(key)))),
        };
        if slot.is_some() {
            return Err(malformed(format!("field `{key}` given twice")));
        }
        if val.is_empty() {
            return Err(malformed(format!("field `{key}` is empty")));
        }
        *slot = Some(val);
    }
    let access_key = access.ok_or_else(|| malformed("missing field `Access`".into()))?;
    let signed = signed.ok_or_else(|| malformed("missing field `SignedHeaders`".into()))?;
    let signature = signature.ok_or_else(|| malformed("missing field `Signature`".into()))?;
    if access_key
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(malformed("`Access` contains white space".into()));
    }
    let signed_headers: Vec<&str> = signed.split(';').collect();
    for (i, name) in signed_headers.iter().enumerate() {
        if name.is_empty() {
            return Err(malformed("`SignedHeaders` has an empty name".into()));
        }
        if !name.bytes().all(is_lower_token_byte) {
            return Err(malformed(format!(
                "`SignedHeaders` entry `{}` is not a lower-case header name",
                excerpt(name)
            )));
        }
        if signed_headers[..i].contains(name) {
            return Err(malformed(format!("`SignedHeaders` lists `{name}` twice")));
        }
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("`Signature` is not 64 hex digits".into()));
    }
    Ok(Authorization {
        access_key,
        signed_headers,
        signature,
    })
}

/// An RFC 9110 token character, upper case excluded.
fn is_lower_token_byte(b: u8) -> bool {
    b.is_ascii_lowercase()
        || b.is_ascii_digit()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Verifies `parts` (the request as received) against `auth` with the
/// secret key of `auth.access_key`.
///
/// Rebuilds the canonical request per the "server-side verification recipe"
/// of `docs/sdk-compat-notes.md` and compares signatures in constant time.
/// Does **not** check the date's freshness ([`check_date`]) — use
/// [`authenticate`] for the whole sequence.
///
/// Errors: [`SignError::RequiredHeaderNotSigned`] if `host` or `x-sdk-date`
/// is not among the signed headers (see [`REQUIRED_SIGNED_HEADERS`]);
/// [`SignError::MissingHeader`] / [`SignError::DuplicateHeader`] if a signed
/// header is absent / repeated (a repeated header has no single value the
/// client could have signed, and the SDK never repeats one);
/// [`SignError::BadDate`]; [`SignError::SignatureMismatch`].
pub fn verify(
    parts: &RequestParts<'_>,
    auth: &Authorization<'_>,
    secret_key: &str,
) -> Result<Verified, SignError> {
    for required in REQUIRED_SIGNED_HEADERS {
        if !auth.signed_headers.contains(&required) {
            return Err(SignError::RequiredHeaderNotSigned(required));
        }
    }
    let date = py_strip(
        parts
            .header(DATE_HEADER)?
            .ok_or_else(|| SignError::MissingHeader(DATE_HEADER.to_string()))?,
    );
    // Strict parse: the SDK signs strftime(strptime(header)), which is the
    // header itself exactly when it is in canonical form.
    parse_sdk_date(date)?;
    let canonical = canonical::build(parts, &auth.signed_headers)?;
    let expected = hmac_sha256(
        secret_key,
        &canonical::string_to_sign(date, &canonical.request),
    );
    let given = hex::decode(auth.signature).map_err(|_| {
        SignError::MalformedAuthorization("`Signature` is not 64 hex digits".into())
    })?;
    if bool::from(expected.as_slice().ct_eq(given.as_slice())) {
        Ok(Verified {
            unsigned_payload: canonical.unsigned_payload,
        })
    } else {
        Err(SignError::SignatureMismatch)
    }
}

/// The whole server-side check of a request: reads and parses
/// `Authorization`, checks `X-Sdk-Date` against `now_unix` ± `max_skew_secs`
/// (see [`DEFAULT_MAX_SKEW_SECS`](crate::DEFAULT_MAX_SKEW_SECS)), looks the
/// secret key up by access key (`None` → [`SignError::UnknownAccessKey`]) and
/// [`verify`]s the signature. Every error maps to a 401.
///
/// Whether the access key may act on the project in the path / `X-Project-Id`
/// is the caller's business.
pub fn authenticate<'a, S: AsRef<str>>(
    parts: &RequestParts<'a>,
    now_unix: i64,
    max_skew_secs: i64,
    lookup_secret_key: impl FnOnce(&str) -> Option<S>,
) -> Result<Authenticated<'a>, SignError> {
    let header = parts
        .header(AUTHORIZATION_HEADER)?
        .ok_or_else(|| SignError::MissingHeader(AUTHORIZATION_HEADER.to_string()))?;
    let authorization = parse_authorization(header)?;
    let date = parts
        .header(DATE_HEADER)?
        .ok_or_else(|| SignError::MissingHeader(DATE_HEADER.to_string()))?;
    check_date(py_strip(date), now_unix, max_skew_secs)?;
    let secret_key = lookup_secret_key(authorization.access_key)
        .ok_or_else(|| SignError::UnknownAccessKey(excerpt(authorization.access_key)))?;
    let verified = verify(parts, &authorization, secret_key.as_ref())?;
    Ok(Authenticated {
        authorization,
        unsigned_payload: verified.unsigned_payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "fc73633f7f3a84d32286f6fdd308aa685750dcb558ec4b8a90f054c9377877b1";

    #[test]
    fn parses_sdk_form() {
        let v = format!("SDK-HMAC-SHA256 Access=AK1, SignedHeaders=content-type;host;x-sdk-date, Signature={SIG}");
        assert_eq!(
            parse_authorization(&v),
            Ok(Authorization {
                access_key: "AK1",
                signed_headers: vec!["content-type", "host", "x-sdk-date"],
                signature: SIG,
            })
        );
    }

    #[test]
    fn tolerates_spaces() {
        let v = format!(
            "  SDK-HMAC-SHA256   Access = AK1 ,SignedHeaders=host;x-sdk-date,\tSignature= {SIG}  "
        );
        let a = parse_authorization(&v).unwrap();
        assert_eq!(a.access_key, "AK1");
        assert_eq!(a.signed_headers, ["host", "x-sdk-date"]);
        assert_eq!(a.signature, SIG);
        // Field order does not matter.
        let v = format!("SDK-HMAC-SHA256 Signature={SIG}, Access=AK1, SignedHeaders=host");
        assert!(parse_authorization(&v).is_ok());
    }

    #[test]
    fn rejects() {
        let unsupported = |v: &str| {
            assert!(
                matches!(
                    parse_authorization(v),
                    Err(SignError::UnsupportedAlgorithm(_))
                ),
                "{v:?}"
            )
        };
        let malformed = |v: &str| {
            assert!(
                matches!(
                    parse_authorization(v),
                    Err(SignError::MalformedAuthorization(_))
                ),
                "{v:?}: {:?}",
                parse_authorization(v)
            )
        };
        unsupported("");
        unsupported(&format!(
            "sdk-hmac-sha256 Access=A, SignedHeaders=host, Signature={SIG}"
        ));
        unsupported(&format!(
            "V11-HMAC-SHA256 Credential=A/x, SignedHeaders=host, Signature={SIG}"
        ));
        unsupported(&format!(
            "SDK-HMAC-SHA256,Access=A, SignedHeaders=host, Signature={SIG}"
        ));
        unsupported("Bearer abc");
        malformed("SDK-HMAC-SHA256");
        malformed("SDK-HMAC-SHA256   ");
        malformed(&format!(
            "SDK-HMAC-SHA256 SignedHeaders=host, Signature={SIG}"
        ));
        malformed(&format!("SDK-HMAC-SHA256 Access=A, Signature={SIG}"));
        malformed("SDK-HMAC-SHA256 Access=A, SignedHeaders=host");
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host, Signature={SIG},"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A,, SignedHeaders=host, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A SignedHeaders=host, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=, SignedHeaders=host, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, Access=B, SignedHeaders=host, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 access=A, SignedHeaders=host, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host, Signature={SIG}, Extra=1"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=Host, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host;;x, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host;, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host;host, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host; x, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=ho:st, Signature={SIG}"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A B, SignedHeaders=host, Signature={SIG}"
        ));
        malformed("SDK-HMAC-SHA256 Access=A, SignedHeaders=host, Signature=abc");
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host, Signature={SIG}0"
        ));
        malformed(&format!(
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host, Signature={}g",
            &SIG[..63]
        ));
    }
}
