//! `SDK-HMAC-SHA256` request signatures, byte-for-byte as the official Huawei
//! Cloud Python SDK (`huaweicloudsdkcore`, `signer/signer.py`) computes them:
//! the client side ([`sign`], [`sign_request`]) for our CLI, benchmark and
//! tests, and the server side ([`authenticate`], or [`parse_authorization`] +
//! [`check_date`] + [`verify`]) for the HTTP server.
//!
//! The algorithm, the SDK's behaviour and six test vectors produced by the
//! real SDK are in `docs/sdk-compat-notes.md` (sections 1, 2 and 5); every
//! vector is a test of this crate. In short:
//!
//! ```text
//! canonical request = METHOD \n CanonicalURI \n CanonicalQuery \n
//!                     name:value\n for each signed header \n
//!                     SignedHeaders \n PayloadHash
//! string to sign    = "SDK-HMAC-SHA256" \n X-Sdk-Date \n hex(sha256(canonical request))
//! signature         = hex(HMAC-SHA256(key = secret key bytes, string to sign))
//! Authorization     = SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex
//! ```
//!
//! The crate works on plain strings and bytes ([`RequestParts`]) so both an
//! axum server and a reqwest client can use it.
//!
//! ```
//! use cts_sign::{authenticate, sign_request, RequestParts, DEFAULT_MAX_SKEW_SECS};
//!
//! // Client: headers to send (all of them, Host included), body as sent.
//! let body = br#"{"tracker_type":"system"}"#;
//! let mut headers = vec![("Content-Type".to_string(), "application/json;charset=utf-8".to_string())];
//! let now = 1_795_435_200; // cts_sign::unix_now()
//! sign_request("POST", "http://127.0.0.1:8080/v3/p1/tracker", &mut headers, body, "AK", "SK", now)?;
//!
//! // Server: the request as received (axum: uri.path(), uri.query(), and the
//! // headers whose values are strings, e.g. via HeaderValue::to_str).
//! let parts = RequestParts {
//!     method: "POST",
//!     path: "/v3/p1/tracker",
//!     query: None,
//!     headers: headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
//!     body,
//! };
//! let who = authenticate(&parts, now, DEFAULT_MAX_SKEW_SECS, |ak| (ak == "AK").then_some("SK"))?
//!     .require_signed_payload()?;
//! assert_eq!(who.authorization.access_key, "AK");
//! # Ok::<(), cts_sign::SignError>(())
//! ```
//!
//! # Pitfalls
//!
//! * The canonical URI always ends in `/`, and the path is fully
//!   percent-decoded *before* being split on `/`: an encoded slash `%2F` in a
//!   path parameter signs as a real `/` (vector V4).
//! * The query is sorted on **decoded** keys and values (`é` sorts after `z`
//!   although `%C3%A9` sorts before it), then re-encoded.
//! * `+` in a query is a literal plus (the SDK sends `%2B`, and a space as
//!   `%20`); never form-decode `+` into a space. `a+b` and `a%20b` sign
//!   differently.
//! * Any other encoding difference is harmless: both sides decode and
//!   re-encode with only `A-Za-z0-9-._~` left bare (upper-case hex), so the
//!   wire encoding and the order of query parameters do not matter.
//! * Every header whose name has no `_` is signed, including `User-Agent`
//!   (free text) and `Host` **with its port**: a proxy that rewrites either
//!   breaks signatures. Values are only trimmed of leading/trailing white
//!   space (Python's `str.strip()`), never folded.
//! * The secret key's UTF-8 bytes are the HMAC key, with no derivation (the
//!   SDK's opt-in `V11-HMAC-SHA256` derived scheme is not supported).
//! * `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD` leaves the body unsigned (the
//!   SDK sends it only for non-JSON content types, never for CTS); the
//!   verifier reports it ([`Verified::unsigned_payload`]) so the server can
//!   refuse it. Any other value of that header is ignored in favour of the
//!   real body hash.
//! * The SDK has no clock-skew logic; the server must check `X-Sdk-Date`
//!   freshness itself ([`check_date`], [`DEFAULT_MAX_SKEW_SECS`]), and a
//!   signature that does not cover `host` and `x-sdk-date` is refused
//!   ([`REQUIRED_SIGNED_HEADERS`]).
//! * A header that occurs twice cannot be signed or verified
//!   ([`SignError::DuplicateHeader`]); the SDK never sends duplicates.
//! * Paths must not contain `.`/`..` segments: URL libraries resolve them
//!   before sending, so the server would see another path than was signed.
//! * An empty body always hashes as the SHA-256 of nothing, whatever the
//!   headers say.

mod canonical;
mod date;
pub mod fuzzing;
mod sign;
mod verify;

pub use canonical::{canonical_query, canonical_request, canonical_uri, string_to_sign};
pub use date::{check_date, format_sdk_date, parse_sdk_date};
pub use sign::{sign, sign_request};
pub use verify::{
    authenticate, parse_authorization, verify, Authenticated, Authorization, Verified,
    REQUIRED_SIGNED_HEADERS,
};

/// The signing algorithm, first word of the `Authorization` header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// The signing time, `%Y%m%dT%H%M%SZ` in UTC (e.g. `20261123T120000Z`).
pub const DATE_HEADER: &str = "X-Sdk-Date";
/// The project id header the SDK adds (signed like any other header).
pub const PROJECT_HEADER: &str = "X-Project-Id";
/// The header carrying the signature.
pub const AUTHORIZATION_HEADER: &str = "Authorization";
/// Always signed, with the port when it is not the scheme's default.
pub const HOST_HEADER: &str = "Host";
/// Set to [`UNSIGNED_PAYLOAD`] by the SDK for non-JSON bodies.
pub const CONTENT_SHA256_HEADER: &str = "X-Sdk-Content-Sha256";
/// The payload hash stand-in that leaves the body unsigned.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Hex SHA-256 of the empty string, the payload hash of an empty body.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// A sensible freshness window for `X-Sdk-Date`: ±15 minutes.
pub const DEFAULT_MAX_SKEW_SECS: i64 = 15 * 60;

/// A request as seen on the wire (server) or about to be sent (client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestParts<'a> {
    /// The HTTP method (upper-cased for signing).
    pub method: &'a str,
    /// The raw path, percent-encoded as received / sent, without the query.
    pub path: &'a str,
    /// The raw query string without the `?`, as received / sent.
    pub query: Option<&'a str>,
    /// The headers (name, value) as received / sent; names are
    /// case-insensitive. Only the signed ones matter; a server may pass all
    /// headers whose values are valid strings.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The exact body bytes.
    pub body: &'a [u8],
}

impl<'a> RequestParts<'a> {
    /// The value of header `name` (case-insensitive), `None` if absent,
    /// [`SignError::DuplicateHeader`] if it occurs more than once.
    pub fn header(&self, name: &str) -> Result<Option<&'a str>, SignError> {
        let mut found = None;
        for &(n, v) in &self.headers {
            if n.eq_ignore_ascii_case(name) {
                if found.is_some() {
                    return Err(SignError::DuplicateHeader(name.to_ascii_lowercase()));
                }
                found = Some(v);
            }
        }
        Ok(found)
    }
}

/// Why a request could not be signed or was not authenticated. Every variant
/// is a 401 on the server, and its message says what is wrong (messages
/// quote at most 64 characters of client input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// A required header is absent: `Authorization`, `X-Sdk-Date`, `Host`, or
    /// a header listed in `SignedHeaders`.
    #[error("missing header `{0}`")]
    MissingHeader(String),
    /// A header that must be read occurs more than once.
    #[error("header `{0}` occurs more than once")]
    DuplicateHeader(String),
    /// The `Authorization` header is not `SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(String),
    /// The `Authorization` header names another algorithm.
    #[error("unsupported signing algorithm `{0}`: only SDK-HMAC-SHA256 is accepted")]
    UnsupportedAlgorithm(String),
    /// `SignedHeaders` lacks `host` or `x-sdk-date` (see [`REQUIRED_SIGNED_HEADERS`]).
    #[error("the signature must cover the `{0}` header")]
    RequiredHeaderNotSigned(&'static str),
    /// `X-Sdk-Date` is not a valid `YYYYMMDDTHHMMSSZ` UTC time.
    #[error("malformed X-Sdk-Date `{0}`: expected YYYYMMDDTHHMMSSZ (UTC)")]
    BadDate(String),
    /// `X-Sdk-Date` is too far from the server's clock (positive: in the future).
    #[error("X-Sdk-Date is {skew_secs} s off the server clock (at most {max_skew_secs} s allowed): check the client's clock")]
    StaleDate {
        /// Request time minus server time, in seconds.
        skew_secs: i64,
        /// The allowed absolute skew.
        max_skew_secs: i64,
    },
    /// No secret key is known for this access key.
    #[error("unknown access key `{0}`")]
    UnknownAccessKey(String),
    /// The signature does not match the request (wrong secret key, or the
    /// request was altered after signing, e.g. by a proxy).
    #[error("signature does not match the request")]
    SignatureMismatch,
    /// The body is not covered by the signature (`X-Sdk-Content-Sha256:
    /// UNSIGNED-PAYLOAD`) and the server requires it to be.
    #[error("unsigned payload (X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD) is not accepted")]
    UnsignedPayload,
    /// [`sign_request`] was given a URL it cannot split.
    #[error("bad URL: {0}")]
    BadUrl(String),
}

/// At most 64 characters of client input, for error messages.
pub(crate) fn excerpt(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The current time in Unix seconds (negative before 1970), for
/// [`sign_request`] and [`authenticate`].
pub use cts_clock::now_secs as unix_now;
