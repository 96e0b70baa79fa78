//! The six test vectors of `docs/sdk-compat-notes.md` §2, produced by the real
//! `huaweicloudsdkcore` signer, plus tampering, edge cases and round trips.

use cts_sign::{
    authenticate, canonical_request, check_date, parse_authorization, sign, sign_request,
    string_to_sign, verify, Authorization, RequestParts, SignError, DEFAULT_MAX_SKEW_SECS,
};

const AK: &str = "TESTAK1234567890ABCD";
const SK: &str = "testsecretkey0123456789abcdefghijklmnopqr";
/// 20261123T120000Z, the vectors' fixed clock.
const NOW: i64 = 1_795_435_200;
const DATE: &str = "20261123T120000Z";

struct Vector {
    name: &'static str,
    /// The request as captured from `requests` (request line, headers, body).
    wire: &'static str,
    canonical_request: &'static str,
    string_to_sign: &'static str,
    authorization: &'static str,
}

const VECTORS: &[Vector] = &[
    Vector {
        name: "V1 GET list_traces (query needing encoding, empty value, int)",
        wire: r#"GET /v3/0123456789abcdef0123456789abcdef/traces?from=1&limit=10&next=&resource_name=%E5%90%8D%E5%AD%97%2F~%2A%2B&service_type=CTS&to=1700000000000&trace_name=a%20b&trace_type=system&user=x%40y
User-Agent: huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000
Accept-Encoding: gzip, deflate
Accept: */*
Connection: keep-alive
Content-Type: application/json
X-Project-Id: 0123456789abcdef0123456789abcdef
X-Sdk-Date: 20261123T120000Z
Host: 127.0.0.1:8080
Authorization: SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=fc73633f7f3a84d32286f6fdd308aa685750dcb558ec4b8a90f054c9377877b1"#,
        canonical_request: "GET\n/v3/0123456789abcdef0123456789abcdef/traces/\nfrom=1&limit=10&next=&resource_name=%E5%90%8D%E5%AD%97%2F~%2A%2B&service_type=CTS&to=1700000000000&trace_name=a%20b&trace_type=system&user=x%40y\ncontent-type:application/json\nhost:127.0.0.1:8080\nuser-agent:huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000\nx-project-id:0123456789abcdef0123456789abcdef\nx-sdk-date:20261123T120000Z\n\ncontent-type;host;user-agent;x-project-id;x-sdk-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        string_to_sign: "SDK-HMAC-SHA256\n20261123T120000Z\n536fe0ac3ee069c9abf6c2e15260d643280a8d5954cddb8d5cb842e0e53ba3f4",
        authorization: "SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=fc73633f7f3a84d32286f6fdd308aa685750dcb558ec4b8a90f054c9377877b1",
    },
    Vector {
        name: "V2 POST create_tracker (JSON body)",
        wire: r#"POST /v3/0123456789abcdef0123456789abcdef/tracker
User-Agent: huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000
Accept-Encoding: gzip, deflate
Accept: */*
Connection: keep-alive
Content-Type: application/json;charset=utf-8
X-Project-Id: 0123456789abcdef0123456789abcdef
X-Sdk-Date: 20261123T120000Z
Host: 127.0.0.1:8080
Authorization: SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=a3782c3dc87c72df1c4bbf8a570a5df4971dd0e858b3ff4c956fa7a5abb5ceca
Content-Length: 145

{"tracker_type": "system", "tracker_name": "system", "is_lts_enabled": true, "obs_info": {"bucket_name": "my-bucket", "file_prefix_name": "cts"}}"#,
        canonical_request: "POST\n/v3/0123456789abcdef0123456789abcdef/tracker/\n\ncontent-type:application/json;charset=utf-8\nhost:127.0.0.1:8080\nuser-agent:huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000\nx-project-id:0123456789abcdef0123456789abcdef\nx-sdk-date:20261123T120000Z\n\ncontent-type;host;user-agent;x-project-id;x-sdk-date\n4db019e949a9281b3e8a89ff8bbc6e42f01e32749f277b729debf57c6f4bce76",
        string_to_sign: "SDK-HMAC-SHA256\n20261123T120000Z\n3362e8cd0145ad4bdb14cf3f3769663f165da6e76ec9ab8e1fa6cc039a4fbabb",
        authorization: "SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=a3782c3dc87c72df1c4bbf8a570a5df4971dd0e858b3ff4c956fa7a5abb5ceca",
    },
    Vector {
        name: "V3 DELETE delete_tracker (query)",
        wire: r#"DELETE /v3/0123456789abcdef0123456789abcdef/trackers?tracker_name=my%20tracker%26x%3D1&tracker_type=data
User-Agent: huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000
Accept-Encoding: gzip, deflate
Accept: */*
Connection: keep-alive
Content-Type: application/json
X-Project-Id: 0123456789abcdef0123456789abcdef
X-Sdk-Date: 20261123T120000Z
Host: 127.0.0.1:8080
Authorization: SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=05a4ee6e98c7928d6dd287d232a12b99235c8439e4e941ecd0dd5bf3e1f2b411
Content-Length: 0"#,
        canonical_request: "DELETE\n/v3/0123456789abcdef0123456789abcdef/trackers/\ntracker_name=my%20tracker%26x%3D1&tracker_type=data\ncontent-type:application/json\nhost:127.0.0.1:8080\nuser-agent:huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000\nx-project-id:0123456789abcdef0123456789abcdef\nx-sdk-date:20261123T120000Z\n\ncontent-type;host;user-agent;x-project-id;x-sdk-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        string_to_sign: "SDK-HMAC-SHA256\n20261123T120000Z\nf7ebc804c9f84d2a66dc5bb0c4fbf574277995517b517c62fcff86b8ea43bce5",
        authorization: "SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=05a4ee6e98c7928d6dd287d232a12b99235c8439e4e941ecd0dd5bf3e1f2b411",
    },
    Vector {
        name: "V4 POST batch_create_resource_tags (path params needing encoding)",
        wire: r#"POST /v3/0123456789abcdef0123456789abcdef/cts-tracker/id%20with%2Fslash%40%C3%A4~/tags/create
User-Agent: huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000
Accept-Encoding: gzip, deflate
Accept: */*
Connection: keep-alive
Content-Type: application/json;charset=utf-8
X-Project-Id: 0123456789abcdef0123456789abcdef
X-Sdk-Date: 20261123T120000Z
Host: 127.0.0.1:8080
Authorization: SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=f07c725b81b260d2c20b5ec770cdb5da9a78c2ae7a2cd6018e63e321d4d5819d
Content-Length: 38

{"tags": [{"key": "k", "value": "v"}]}"#,
        canonical_request: "POST\n/v3/0123456789abcdef0123456789abcdef/cts-tracker/id%20with/slash%40%C3%A4~/tags/create/\n\ncontent-type:application/json;charset=utf-8\nhost:127.0.0.1:8080\nuser-agent:huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000\nx-project-id:0123456789abcdef0123456789abcdef\nx-sdk-date:20261123T120000Z\n\ncontent-type;host;user-agent;x-project-id;x-sdk-date\n02b38608bd19a03d9c0aca71c6f7120fc02462b45aa084de3cf1557704692acc",
        string_to_sign: "SDK-HMAC-SHA256\n20261123T120000Z\n8ccee88cdb2f3c2653775b718df953a8c541dd1b04986886e0572893eea64516",
        authorization: "SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=f07c725b81b260d2c20b5ec770cdb5da9a78c2ae7a2cd6018e63e321d4d5819d",
    },
    Vector {
        name: "V5 GET list_quotas (no query, no body)",
        wire: r#"GET /v3/0123456789abcdef0123456789abcdef/quotas
User-Agent: huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000
Accept-Encoding: gzip, deflate
Accept: */*
Connection: keep-alive
Content-Type: application/json
X-Project-Id: 0123456789abcdef0123456789abcdef
X-Sdk-Date: 20261123T120000Z
Host: 127.0.0.1:8080
Authorization: SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=f21be8fce8eff61ae65a3b71817f46713228a7e0f82dcd75ed090b90c92019c0"#,
        canonical_request: "GET\n/v3/0123456789abcdef0123456789abcdef/quotas/\n\ncontent-type:application/json\nhost:127.0.0.1:8080\nuser-agent:huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000\nx-project-id:0123456789abcdef0123456789abcdef\nx-sdk-date:20261123T120000Z\n\ncontent-type;host;user-agent;x-project-id;x-sdk-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        string_to_sign: "SDK-HMAC-SHA256\n20261123T120000Z\n03ef275ae76d878d744e4a332b4bc25fd14da0539adc12a32141c3cadf2cd3b7",
        authorization: "SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, Signature=f21be8fce8eff61ae65a3b71817f46713228a7e0f82dcd75ed090b90c92019c0",
    },
    Vector {
        name: "V6 synthetic PUT text/plain body -> X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD (not a CTS operation)",
        wire: r#"PUT /v3/0123456789abcdef0123456789abcdef/raw
User-Agent: huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000
Accept-Encoding: gzip, deflate
Accept: */*
Connection: keep-alive
Content-Type: text/plain
X-Project-Id: 0123456789abcdef0123456789abcdef
X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD
X-Sdk-Date: 20261123T120000Z
Host: 127.0.0.1:8080
Authorization: SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-content-sha256;x-sdk-date, Signature=118656f83cf18902e0873bfd9321b2174caba40d87ac1bda9fb7015502ae0db7
Content-Length: 5

hello"#,
        canonical_request: "PUT\n/v3/0123456789abcdef0123456789abcdef/raw/\n\ncontent-type:text/plain\nhost:127.0.0.1:8080\nuser-agent:huaweicloud-usdk-python/3.0; os/Linux#6.1.0#x86_64 python/3.11.2 impl/CPython; app/00000000-0000-4000-8000-000000000000\nx-project-id:0123456789abcdef0123456789abcdef\nx-sdk-content-sha256:UNSIGNED-PAYLOAD\nx-sdk-date:20261123T120000Z\n\ncontent-type;host;user-agent;x-project-id;x-sdk-content-sha256;x-sdk-date\nUNSIGNED-PAYLOAD",
        string_to_sign: "SDK-HMAC-SHA256\n20261123T120000Z\nc70d6fe5e317d609c5fce9ff7db203ef8931426931e82452073a49d020109000",
        authorization: "SDK-HMAC-SHA256 Access=TESTAK1234567890ABCD, SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-content-sha256;x-sdk-date, Signature=118656f83cf18902e0873bfd9321b2174caba40d87ac1bda9fb7015502ae0db7",
    },
];

/// The request of a vector as the server receives it: all headers, including
/// the unsigned ones `requests` adds and `Authorization`.
fn wire(v: &Vector) -> RequestParts<'static> {
    let (head, body) = v.wire.split_once("\n\n").unwrap_or((v.wire, ""));
    let mut lines = head.lines();
    let (method, target) = lines.next().unwrap().split_once(' ').unwrap();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let headers = lines.map(|l| l.split_once(": ").unwrap()).collect();
    RequestParts {
        method,
        path,
        query,
        headers,
        body: body.as_bytes(),
    }
}

/// The request of a vector as the SDK's signer saw it: without
/// `Authorization` and the headers `requests` adds later.
fn at_signing(v: &Vector) -> RequestParts<'static> {
    let mut parts = wire(v);
    parts.headers.retain(|(n, _)| {
        ![
            "Accept-Encoding",
            "Accept",
            "Connection",
            "Content-Length",
            "Authorization",
        ]
        .contains(n)
    });
    parts
}

fn lookup(ak: &str) -> Option<&'static str> {
    (ak == AK).then_some(SK)
}

fn check(parts: &RequestParts<'_>) -> Result<bool, SignError> {
    authenticate(parts, NOW, DEFAULT_MAX_SKEW_SECS, lookup).map(|a| a.unsigned_payload)
}

fn set_header<'a>(parts: &mut RequestParts<'a>, name: &str, value: &'a str) {
    let slot = parts
        .headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .unwrap();
    slot.1 = value;
}

#[test]
fn vectors_sign_exactly_like_the_sdk() {
    for v in VECTORS {
        let parts = at_signing(v);
        let auth = parse_authorization(v.authorization).unwrap();
        let canonical = canonical_request(&parts, &auth.signed_headers).unwrap();
        assert_eq!(canonical, v.canonical_request, "{}", v.name);
        assert_eq!(
            string_to_sign(DATE, &canonical),
            v.string_to_sign,
            "{}",
            v.name
        );
        assert_eq!(sign(&parts, AK, SK).unwrap(), v.authorization, "{}", v.name);
        // The wire request, header order shuffled, rebuilds the same canonical request.
        let mut parts = wire(v);
        parts.headers.reverse();
        assert_eq!(
            canonical_request(&parts, &auth.signed_headers).unwrap(),
            v.canonical_request,
            "{}",
            v.name
        );
    }
}

#[test]
fn vectors_verify() {
    for v in VECTORS {
        let parts = wire(v);
        let unsigned = v.name.starts_with("V6");
        assert_eq!(check(&parts), Ok(unsigned), "{}", v.name);
        let auth = parse_authorization(v.authorization).unwrap();
        let verified = verify(&parts, &auth, SK).unwrap();
        assert_eq!(verified.unsigned_payload, unsigned, "{}", v.name);
        assert_eq!(
            verified.require_signed_payload().is_err(),
            unsigned,
            "{}",
            v.name
        );
        let authenticated = authenticate(&parts, NOW, 900, lookup).unwrap();
        assert_eq!(authenticated.authorization, auth);
        // A lower-case method is upper-cased like the SDK does.
        let mut lower = parts.clone();
        let method = parts.method.to_ascii_lowercase();
        lower.method = &method;
        assert_eq!(check(&lower), Ok(unsigned), "{}", v.name);
    }
}

#[test]
fn tampered_vectors_fail() {
    let mismatch = Err(SignError::SignatureMismatch);
    for v in VECTORS {
        let original = wire(v);
        let name = v.name;

        let mut p = original.clone();
        p.method = if p.method == "GET" { "HEAD" } else { "GET" };
        assert_eq!(check(&p), mismatch, "{name}: method");

        let path = format!("{}x", original.path);
        let mut p = original.clone();
        p.path = &path;
        assert_eq!(check(&p), mismatch, "{name}: path");

        let path = original.path.replacen("/v3/", "/v2/", 1);
        let mut p = original.clone();
        p.path = &path;
        assert_eq!(check(&p), mismatch, "{name}: path prefix");

        let query = match original.query {
            Some(q) => format!("{q}&extra=1"),
            None => "extra=1".to_string(),
        };
        let mut p = original.clone();
        p.query = Some(&query);
        assert_eq!(check(&p), mismatch, "{name}: query added");

        if let Some(q) = original.query {
            let mut p = original.clone();
            p.query = None;
            assert_eq!(check(&p), mismatch, "{name}: query removed");
            let changed = q.replacen('=', "=Z", 1);
            let mut p = original.clone();
            p.query = Some(&changed);
            assert_eq!(check(&p), mismatch, "{name}: query value");
        }

        let mut body = original.body.to_vec();
        body.push(b' ');
        let mut p = original.clone();
        p.body = &body;
        if v.name.starts_with("V6") {
            // UNSIGNED-PAYLOAD: the body is not covered. That is what the
            // flag is for.
            assert_eq!(check(&p), Ok(true), "{name}: unsigned body");
        } else {
            assert_eq!(check(&p), mismatch, "{name}: body");
        }
        if !original.body.is_empty() {
            let mut p = original.clone();
            p.body = b"";
            assert_eq!(check(&p), mismatch, "{name}: body removed");
        }

        let mut p = original.clone();
        set_header(&mut p, "User-Agent", "curl/8.0");
        assert_eq!(check(&p), mismatch, "{name}: user-agent");

        let mut p = original.clone();
        set_header(&mut p, "Host", "127.0.0.1:8081");
        assert_eq!(check(&p), mismatch, "{name}: host");

        let mut p = original.clone();
        set_header(&mut p, "X-Project-Id", "fedcba9876543210fedcba9876543210");
        assert_eq!(check(&p), mismatch, "{name}: project");

        // Another valid date inside the window.
        let mut p = original.clone();
        set_header(&mut p, "X-Sdk-Date", "20261123T120001Z");
        assert_eq!(check(&p), mismatch, "{name}: date");

        // White space around a value is trimmed; inside it is not.
        let mut p = original.clone();
        set_header(&mut p, "Content-Type", " application/json ; x");
        assert_eq!(check(&p), mismatch, "{name}: content-type");
        let padded = format!("  {} \t", original.header("Content-Type").unwrap().unwrap());
        let mut p = original.clone();
        set_header(&mut p, "Content-Type", &padded);
        assert!(check(&p).is_ok(), "{name}: padded value");

        // Unsigned headers may change.
        let mut p = original.clone();
        set_header(&mut p, "Accept", "text/html");
        p.headers.push(("X_Underscore", "anything"));
        assert!(check(&p).is_ok(), "{name}: unsigned header");

        // Wrong secret.
        let auth = parse_authorization(v.authorization).unwrap();
        assert_eq!(
            verify(
                &original,
                &auth,
                "testsecretkey0123456789abcdefghijklmnopqs"
            ),
            Err(SignError::SignatureMismatch),
            "{name}: secret"
        );
        assert_eq!(
            verify(&original, &auth, ""),
            Err(SignError::SignatureMismatch)
        );

        // Signature altered / other access key.
        let mut other = auth.clone();
        let flipped = format!("0{}", &auth.signature[1..]);
        let flipped = if flipped == auth.signature {
            format!("1{}", &auth.signature[1..])
        } else {
            flipped
        };
        other.signature = &flipped;
        assert_eq!(
            verify(&original, &other, SK),
            Err(SignError::SignatureMismatch),
            "{name}: signature"
        );
        let upper = auth.signature.to_ascii_uppercase();
        other.signature = &upper;
        assert!(
            verify(&original, &other, SK).is_ok(),
            "{name}: upper-case hex"
        );

        // SignedHeaders reduced: refused before any signature check if it
        // drops a required header, otherwise a mismatch.
        for (drop, err) in [
            ("host", Err(SignError::RequiredHeaderNotSigned("host"))),
            (
                "x-sdk-date",
                Err(SignError::RequiredHeaderNotSigned("x-sdk-date")),
            ),
            ("user-agent", Err(SignError::SignatureMismatch)),
        ] {
            let mut fewer = auth.clone();
            fewer.signed_headers.retain(|h| *h != drop);
            assert_eq!(
                verify(&original, &fewer, SK).map(|_| ()),
                err,
                "{name}: {drop}"
            );
        }

        // A signed header missing from the request.
        let mut p = original.clone();
        p.headers.retain(|(n, _)| *n != "X-Project-Id");
        assert_eq!(
            check(&p),
            Err(SignError::MissingHeader("x-project-id".into())),
            "{name}: missing header"
        );
        // Repeated.
        let mut p = original.clone();
        p.headers.push(("user-agent", "again"));
        assert_eq!(
            check(&p),
            Err(SignError::DuplicateHeader("user-agent".into())),
            "{name}: duplicate header"
        );
        // A repeated unsigned header is fine.
        let mut p = original.clone();
        p.headers.push(("accept", "again"));
        assert!(check(&p).is_ok(), "{name}: duplicate unsigned header");
    }
}

#[test]
fn authenticate_failures() {
    let v = &VECTORS[0];
    let parts = wire(v);
    assert!(authenticate(&parts, NOW, 900, lookup).is_ok());

    let mut p = parts.clone();
    p.headers.retain(|(n, _)| *n != "Authorization");
    assert_eq!(
        authenticate(&p, NOW, 900, lookup),
        Err(SignError::MissingHeader("Authorization".into()))
    );

    let mut p = parts.clone();
    p.headers.retain(|(n, _)| *n != "X-Sdk-Date");
    assert_eq!(
        authenticate(&p, NOW, 900, lookup),
        Err(SignError::MissingHeader("X-Sdk-Date".into()))
    );
    let auth = parse_authorization(v.authorization).unwrap();
    assert_eq!(
        verify(&p, &auth, SK),
        Err(SignError::MissingHeader("X-Sdk-Date".into()))
    );

    let mut p = parts.clone();
    set_header(&mut p, "X-Sdk-Date", "2026-11-23T12:00:00Z");
    assert!(matches!(
        authenticate(&p, NOW, 900, lookup),
        Err(SignError::BadDate(_))
    ));
    assert!(matches!(verify(&p, &auth, SK), Err(SignError::BadDate(_))));

    assert_eq!(
        authenticate(&parts, NOW, 900, |_| None::<String>),
        Err(SignError::UnknownAccessKey(AK.into()))
    );
    assert!(authenticate(&parts, NOW, 900, |_| Some(SK.to_string())).is_ok());

    // Freshness window, both directions, boundary included.
    for (now, ok) in [
        (NOW + 900, true),
        (NOW - 900, true),
        (NOW + 901, false),
        (NOW - 901, false),
    ] {
        let r = authenticate(&parts, now, 900, lookup);
        if ok {
            assert!(r.is_ok(), "{now}");
        } else {
            assert!(matches!(r, Err(SignError::StaleDate { .. })), "{now}");
        }
    }
    assert_eq!(
        authenticate(&parts, NOW + 3600, 900, lookup),
        Err(SignError::StaleDate {
            skew_secs: -3600,
            max_skew_secs: 900
        })
    );
    assert!(check_date(DATE, NOW, 0).is_ok());

    let mut p = parts.clone();
    set_header(
        &mut p,
        "Authorization",
        "SDK-HMAC-SM3 Access=TESTAK1234567890ABCD, SignedHeaders=host, Signature=00",
    );
    assert_eq!(
        authenticate(&p, NOW, 900, lookup),
        Err(SignError::UnsupportedAlgorithm("SDK-HMAC-SM3".into()))
    );

    let mut p = parts.clone();
    p.headers.push(("authorization", v.authorization));
    assert_eq!(
        authenticate(&p, NOW, 900, lookup),
        Err(SignError::DuplicateHeader("authorization".into()))
    );

    // Every error has a message fit for a 401 body.
    for e in [
        SignError::MissingHeader("Host".into()),
        SignError::StaleDate {
            skew_secs: 1000,
            max_skew_secs: 900,
        },
        SignError::SignatureMismatch,
        SignError::RequiredHeaderNotSigned("host"),
    ] {
        assert!(!e.to_string().is_empty());
    }
}

fn signed(
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    body: &'static [u8],
) -> (RequestParts<'static>, String) {
    let parts = RequestParts {
        method,
        path,
        query,
        headers: vec![
            ("Host", "cts.example:8080"),
            ("X-Sdk-Date", DATE),
            ("Content-Type", "application/json"),
        ],
        body,
    };
    let auth = sign(&parts, AK, SK).unwrap();
    (parts, auth)
}

fn verifies(parts: &RequestParts<'_>, auth: &str) -> Result<(), SignError> {
    verify(parts, &parse_authorization(auth).unwrap(), SK).map(|_| ())
}

#[test]
fn plus_is_not_space() {
    let (parts, auth) = signed("GET", "/q", Some("name=a+b"), b"");
    assert!(verifies(&parts, &auth).is_ok());
    let mut p = parts.clone();
    p.query = Some("name=a%2Bb");
    assert!(verifies(&p, &auth).is_ok());
    p.query = Some("name=a%20b");
    assert_eq!(verifies(&p, &auth), Err(SignError::SignatureMismatch));
    p.query = Some("name=a b");
    assert_eq!(verifies(&p, &auth), Err(SignError::SignatureMismatch));
    // Same in the path.
    let (parts, auth) = signed("GET", "/a+b", None, b"");
    let mut p = parts.clone();
    p.path = "/a%2Bb";
    assert!(verifies(&p, &auth).is_ok());
    p.path = "/a%20b";
    assert_eq!(verifies(&p, &auth), Err(SignError::SignatureMismatch));
}

#[test]
fn query_order_and_encoding_on_the_wire_are_irrelevant() {
    let v = &VECTORS[0];
    let original = wire(v);
    let mut items: Vec<&str> = original.query.unwrap().split('&').collect();
    items.reverse();
    let reversed = items.join("&");
    let mut p = original.clone();
    p.query = Some(&reversed);
    assert_eq!(check(&p), Ok(false));
    // Other encodings of the same values, empty items.
    let respelled = original
        .query
        .unwrap()
        .replace('~', "%7E")
        .replace("%2A", "%2a")
        .replace("limit=10", "limit=%31%30")
        .replace("trace_type", "trace%5Ftype")
        + "&&";
    let mut p = original.clone();
    p.query = Some(&respelled);
    assert_eq!(check(&p), Ok(false));
    // An encoded '&' or '=' is data, not a separator (V3).
    let v3 = wire(&VECTORS[2]);
    let mut p = v3.clone();
    p.query = Some("tracker_name=my%20tracker&x=1&tracker_type=data");
    assert_eq!(check(&p), Err(SignError::SignatureMismatch));
    // Path respelled: '~' encoded, unreserved characters encoded.
    let v4 = wire(&VECTORS[3]);
    let mut p = v4.clone();
    p.path =
        "/v3/0123456789abcdef0123456789abcdef/cts-tracker/id with/slash@%c3%a4%7E/tags/%63reate";
    assert_eq!(check(&p), Ok(false));
    // %2F signs as a real '/' (the SDK decodes before splitting): V4's
    // signature also holds for the unencoded slash, and a trailing '/' is
    // implied.
    p.path =
        "/v3/0123456789abcdef0123456789abcdef/cts-tracker/id%20with/slash%40%C3%A4~/tags/create/";
    assert_eq!(check(&p), Ok(false));
}

#[test]
fn payload_hash_rules() {
    // An empty body hashes as empty even with UNSIGNED-PAYLOAD.
    let mut parts = RequestParts {
        method: "PUT",
        path: "/raw",
        query: None,
        headers: vec![
            ("Host", "h"),
            ("X-Sdk-Date", DATE),
            ("X-Sdk-Content-Sha256", "UNSIGNED-PAYLOAD"),
        ],
        body: b"",
    };
    let auth = sign(&parts, AK, SK).unwrap();
    let canonical =
        canonical_request(&parts, &parse_authorization(&auth).unwrap().signed_headers).unwrap();
    assert!(
        canonical.ends_with("\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(
        verify(&parts, &parse_authorization(&auth).unwrap(), SK).map(|v| v.unsigned_payload),
        Ok(false)
    );
    // A claimed hash other than UNSIGNED-PAYLOAD is never trusted: the real
    // body hash is signed and verified.
    parts.body = b"hello";
    parts.headers[2].1 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    let auth = sign(&parts, AK, SK).unwrap();
    assert_eq!(
        verify(&parts, &parse_authorization(&auth).unwrap(), SK).map(|v| v.unsigned_payload),
        Ok(false)
    );
    let mut p = parts.clone();
    p.body = b"hellO";
    assert_eq!(
        verify(&p, &parse_authorization(&auth).unwrap(), SK),
        Err(SignError::SignatureMismatch)
    );
    // UNSIGNED-PAYLOAD that is not itself signed is ignored.
    let mut p = parts.clone();
    p.headers[2] = ("X_Sdk_Content_Sha256", "UNSIGNED-PAYLOAD");
    let auth = sign(&p, AK, SK).unwrap();
    assert!(!auth.contains("x-sdk-content-sha256"));
    p.headers.push(("X-Sdk-Content-Sha256", "UNSIGNED-PAYLOAD"));
    assert_eq!(
        verify(&p, &parse_authorization(&auth).unwrap(), SK).map(|v| v.unsigned_payload),
        Ok(false)
    );
}

#[test]
fn sign_errors_and_header_rules() {
    let base = RequestParts {
        method: "GET",
        path: "/",
        query: None,
        headers: vec![("Host", "h:1"), ("X-Sdk-Date", DATE)],
        body: b"",
    };
    let auth = sign(&base, AK, SK).unwrap();
    assert!(auth.contains("SignedHeaders=host;x-sdk-date,"), "{auth}");

    let mut p = base.clone();
    p.headers.remove(0);
    assert_eq!(
        sign(&p, AK, SK),
        Err(SignError::MissingHeader("Host".into()))
    );
    let mut p = base.clone();
    p.headers.remove(1);
    assert_eq!(
        sign(&p, AK, SK),
        Err(SignError::MissingHeader("X-Sdk-Date".into()))
    );
    let mut p = base.clone();
    p.headers[1].1 = "yesterday";
    assert!(matches!(sign(&p, AK, SK), Err(SignError::BadDate(_))));
    let mut p = base.clone();
    p.headers.push(("HOST", "h:2"));
    assert_eq!(
        sign(&p, AK, SK),
        Err(SignError::DuplicateHeader("host".into()))
    );

    // Names with '_' and Authorization are not signed; names are sorted lower case.
    let mut p = base.clone();
    p.headers.push(("X_Trace_Id", "1"));
    p.headers.push(("Authorization", "old"));
    p.headers.push(("Accept", "*/*"));
    p.headers.push(("X-B", "b"));
    p.headers.push(("x-a", "a"));
    let auth = sign(&p, AK, SK).unwrap();
    assert!(
        auth.contains("SignedHeaders=accept;host;x-a;x-b;x-sdk-date,"),
        "{auth}"
    );
    p.headers.retain(|(n, _)| *n != "Authorization");
    p.headers.push(("Authorization", &auth));
    assert!(authenticate(&p, NOW, 0, lookup).is_ok());
    set_header(&mut p, "X_Trace_Id", "2");
    assert!(authenticate(&p, NOW, 0, lookup).is_ok());

    // A hand-made Authorization that does not sign the date or host is refused.
    let auth = Authorization {
        access_key: AK,
        signed_headers: vec!["x-sdk-date"],
        signature: "00",
    };
    assert_eq!(
        verify(&base, &auth, SK),
        Err(SignError::RequiredHeaderNotSigned("host"))
    );
}

#[test]
fn sign_request_helper() {
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Project-Id".to_string(), "p1".to_string()),
    ];
    let url = "http://127.0.0.1:8080/v3/p1/traces?trace_name=a%20b&limit=10";
    sign_request("GET", url, &mut headers, b"", AK, SK, NOW).unwrap();
    let get = |headers: &Vec<(String, String)>, name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get(&headers, "Host").as_deref(), Some("127.0.0.1:8080"));
    assert_eq!(get(&headers, "X-Sdk-Date").as_deref(), Some(DATE));
    let first_auth = get(&headers, "Authorization").unwrap();
    let server = |headers: &Vec<(String, String)>, now: i64| {
        let parts = RequestParts {
            method: "GET",
            path: "/v3/p1/traces",
            query: Some("trace_name=a%20b&limit=10"),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
            body: b"",
        };
        authenticate(&parts, now, 900, lookup).map(|a| a.unsigned_payload)
    };
    assert_eq!(server(&headers, NOW), Ok(false));

    // Re-signing (a retry, an hour later) replaces date and signature.
    sign_request("GET", url, &mut headers, b"", AK, SK, NOW + 3600).unwrap();
    assert_eq!(headers.len(), 5);
    assert_ne!(get(&headers, "Authorization").unwrap(), first_auth);
    assert_eq!(
        get(&headers, "X-Sdk-Date").as_deref(),
        Some("20261123T130000Z")
    );
    assert_eq!(server(&headers, NOW + 3600), Ok(false));
    assert!(matches!(
        server(&headers, NOW),
        Err(SignError::StaleDate { .. })
    ));

    // Origin-form target needs an explicit Host.
    let mut headers = vec![];
    assert_eq!(
        sign_request("GET", "/v3/x", &mut headers, b"", AK, SK, NOW),
        Err(SignError::MissingHeader("Host".into()))
    );
    let mut headers = vec![("host".to_string(), "cts:8080".to_string())];
    sign_request("POST", "/v3/x?a=1", &mut headers, b"{}", AK, SK, NOW).unwrap();
    assert_eq!(headers.len(), 3);
    assert!(matches!(
        sign_request("GET", "v3/x", &mut headers, b"", AK, SK, NOW),
        Err(SignError::BadUrl(_))
    ));
}

/// xorshift64*: deterministic "random" inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const ATOMS: &[&str] = &[
    "a", "Z", "0", "-", ".", "_", "~", " ", "+", "%", "&", "=", "?", "#", "/", "*", "@", ":", ";",
    ",", "'", "(", "é", "名字", "ä", "😀", "\u{7f}", "%2F", "x y",
];

fn random_text(rng: &mut Rng, max: usize) -> String {
    (0..rng.below(max + 1)).map(|_| rng.pick(ATOMS)).collect()
}

/// Percent-encodes `s` the way some client might: everything, or only what
/// must be, with random hex case.
fn encode(rng: &mut Rng, s: &str, keep_slash: bool) -> String {
    let full = rng.below(2) == 0;
    let mut out = String::new();
    for &b in s.as_bytes() {
        let bare = b.is_ascii_alphanumeric()
            || b"-._~".contains(&b)
            || (!full && b"!$'()*,:@".contains(&b))
            || (keep_slash && b == b'/');
        if bare {
            out.push(b as char);
        } else if rng.below(2) == 0 {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

#[test]
fn random_round_trips() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..400 {
        let method = rng.pick(&["GET", "POST", "PUT", "DELETE", "PATCH"]);
        let segments: Vec<String> = (0..1 + rng.below(4))
            .map(|_| {
                let seg = random_text(&mut rng, 4);
                encode(&mut rng, &seg, false)
            })
            .collect();
        let path = format!("/{}", segments.join("/"));
        let pairs: Vec<String> = (0..rng.below(5))
            .map(|_| {
                let k = random_text(&mut rng, 3);
                let v = random_text(&mut rng, 3);
                format!(
                    "{}={}",
                    encode(&mut rng, &k, false),
                    encode(&mut rng, &v, false)
                )
            })
            .collect();
        let query = pairs.join("&");
        let url = if query.is_empty() {
            format!("http://127.0.0.1:8080{path}")
        } else {
            format!("http://127.0.0.1:8080{path}?{query}")
        };
        let body = random_text(&mut rng, 6).into_bytes();
        let mut headers = vec![
            (
                "User-Agent".to_string(),
                format!("t/{} {}", round, random_text(&mut rng, 3).trim()),
            ),
            ("X-Project-Id".to_string(), "p".to_string()),
        ];
        sign_request(method, &url, &mut headers, &body, AK, SK, NOW).unwrap();

        // The server sees the path and query as sent, with parameters in
        // another order.
        let mut items: Vec<&str> = query.split('&').collect();
        items.reverse();
        let server_query = items.join("&");
        let mut parts = RequestParts {
            method,
            path: &path,
            query: (!query.is_empty()).then_some(server_query.as_str()),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
            body: &body,
        };
        parts.headers.reverse();
        assert_eq!(check(&parts), Ok(false), "round {round}: {url}");

        let mut tampered_body = body.clone();
        tampered_body.push(b'!');
        let mut p = parts.clone();
        p.body = &tampered_body;
        assert_eq!(
            check(&p),
            Err(SignError::SignatureMismatch),
            "round {round}"
        );

        let tampered_path = format!("{path}/x");
        let mut p = parts.clone();
        p.path = &tampered_path;
        assert_eq!(
            check(&p),
            Err(SignError::SignatureMismatch),
            "round {round}"
        );

        let tampered_query = format!("{query}&z=");
        let mut p = parts.clone();
        p.query = Some(&tampered_query);
        assert_eq!(
            check(&p),
            Err(SignError::SignatureMismatch),
            "round {round}"
        );
    }
}

#[test]
fn unicode_and_encoded_slash_round_trip() {
    for (path, same) in [
        ("/v3/p/名字/%C3%A9", "/v3/p/%E5%90%8D%E5%AD%97/é"),
        ("/v3/p/a%2Fb", "/v3/p/a/b"),
        ("/v3/p/%F0%9F%98%80", "/v3/p/😀/"),
        ("/v3/p/%FF%FE", "/v3/p/%ff%fe"),
    ] {
        let mut headers = vec![];
        let url = format!("https://cts.example{path}");
        sign_request("GET", &url, &mut headers, b"", AK, SK, NOW).unwrap();
        for server_path in [path, same] {
            let parts = RequestParts {
                method: "GET",
                path: server_path,
                query: None,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect(),
                body: b"",
            };
            assert_eq!(check(&parts), Ok(false), "{path} vs {server_path}");
        }
    }
}
