//! What an auditor does with standard tools: `age` decrypts trace files,
//! `openssl` checks a digest's signature over the reference's signing string.

use std::process::Command;

use cts_archive::{
    build_digest, build_trace_files, generate_age_key, sha256_hex, signing_string, Compression,
    DigestSpec, LogFile, Period, SigningKey, TraceFileOptions, TrackerPath,
};

use crate::support::age_command;

#[test]
fn age_cli_decrypts_trace_files() {
    let pair = generate_age_key();
    let dir = tempfile::tempdir().unwrap();
    let identity_file = dir.path().join("identity.txt");
    std::fs::write(&identity_file, format!("{}\n", pair.identity)).unwrap();
    let path = TrackerPath {
        file_prefix: "logs".into(),
        region: "eu-de".into(),
        tracker_name: "system".into(),
    };
    let traces = [
        r#"{"trace_id":"a","service_type":"ECS"}"#,
        r#"{"trace_id":"b"}"#,
    ];
    for compression in [Compression::Gzip, Compression::Json] {
        let options = TraceFileOptions {
            compression,
            recipients: vec![pair.recipient.parse().unwrap()],
            ..TraceFileOptions::default()
        };
        let period = Period {
            start: 1_700_000_000,
            end: 1_700_000_300,
        };
        let files = build_trace_files(&path, "p1", Some("ECS"), period, &traces, &options).unwrap();
        let file = &files[0];
        let name = file.key.rsplit('/').next().unwrap();
        let encrypted = dir.path().join(name);
        std::fs::write(&encrypted, &file.body).unwrap();

        let out = age_command()
            .arg("-d")
            .arg("-i")
            .arg(&identity_file)
            .arg(&encrypted)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = match compression {
            Compression::Gzip => {
                assert!(name.ends_with(".json.gz.age"), "{name}");
                let mut json = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&out.stdout[..]),
                    &mut json,
                )
                .unwrap();
                json
            }
            Compression::Json => {
                assert!(name.ends_with(".json.age"), "{name}");
                out.stdout
            }
        };
        assert_eq!(
            String::from_utf8(json).unwrap(),
            format!("[{},{}]", traces[0], traces[1])
        );
    }
}

#[test]
fn openssl_verifies_a_digest_signature() {
    let key = SigningKey::generate().unwrap();
    let path = TrackerPath {
        file_prefix: "logs".into(),
        region: "eu-de".into(),
        tracker_name: "system".into(),
    };
    let digest = build_digest(
        DigestSpec {
            bucket: "bucket",
            path: &path,
            project_id: "p1",
            service: Some("ECS"),
            start: 1_700_000_000,
            end: 1_700_003_600,
            ending: false,
            previous: None,
            log_files: vec![LogFile::new("bucket", "some/file.json.gz", b"x")],
        },
        &key,
    );
    // Everything an auditor has: the object, its meta-signature, the PEM.
    let message = signing_string(
        &digest.digest.digest_end_time,
        &digest.key,
        &sha256_hex(&digest.body),
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let (msg, sig, pem) = (
        dir.path().join("message"),
        dir.path().join("signature"),
        dir.path().join("public.pem"),
    );
    std::fs::write(&msg, &message).unwrap();
    std::fs::write(&sig, hex::decode(&digest.signature).unwrap()).unwrap();
    std::fs::write(&pem, key.verifying_key().to_pem()).unwrap();
    let verify = |message: &std::path::Path| {
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pem)
            .arg("-signature")
            .arg(&sig)
            .arg(message)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `openssl` ({e}): install the Debian package `openssl`")
            })
    };
    let out = verify(&msg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");
    std::fs::write(&msg, format!("{message}x")).unwrap();
    assert!(!verify(&msg).status.success());
}
