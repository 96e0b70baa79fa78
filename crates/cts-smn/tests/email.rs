//! E-mail delivery through a real SMTP server (aiosmtpd, installed by
//! scripts/test-deps.sh) that requires AUTH: the message arrives, from the
//! configured sender to the subscribed address, readable, with the trace.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cts_smn::*;
use serde_json::value::RawValue;
use serde_json::Value;

const P: &str = "0123456789abcdef0123456789abcdef";

/// scripts/smtp-sink.py on a free loopback port; killed when dropped.
struct Sink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sink {
    fn start(user: &str, password: &str) -> Sink {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = root.join("target/smtp-venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/test-deps.sh (installs aiosmtpd)",
            python.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(python)
            .arg(root.join("scripts/smtp-sink.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .args([user, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "smtp-sink.py did not start");
        Sink { child, port, dir }
    }

    fn messages(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        found.sort();
        found
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Header `name` (unfolded) and the body (quoted-printable decoded).
fn parse(mail: &str) -> (impl Fn(&str) -> Option<String> + '_, String) {
    let (head, body) = mail.split_once("\r\n\r\n").unwrap();
    let header = move |name: &str| {
        head.replace("\r\n ", " ")
            .replace("\r\n\t", " ")
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
    };
    let qp = head.to_ascii_lowercase().contains("quoted-printable");
    let body = if qp { decode_qp(body) } else { body.to_owned() };
    (header, body.replace("\r\n", "\n"))
}

fn decode_qp(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() + 1 {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_arrives_through_an_authenticated_relay_readable_with_the_trace() {
    let sink = Sink::start("cts", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("notifications");
    let topics = Arc::new(TopicStore::open(&data).unwrap());
    let outbox = Arc::new(Outbox::open(&data).unwrap());
    let topic = topics.create_topic(P, "eu-de", "alerts", "").unwrap();
    let sub = topics
        .subscribe(P, &topic.urn, Protocol::Email, "ops@example.com", "")
        .unwrap();
    let config = DeliveryConfig {
        timeout: Duration::from_secs(5),
        retry_for: Duration::from_secs(3600),
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        smtp: Some(SmtpConfig {
            host: "127.0.0.1".into(),
            port: sink.port,
            tls: SmtpTls::None,
            user: Some("cts".into()),
            password: Some(Password("s3cret".into())),
            from: "CTS <cts@example.com>".into(),
        }),
    };
    let leases =
        Arc::new(cts_consumer::ConsumerStore::open(&dir.path().join("consumers")).unwrap());
    let deliverer = Deliverer::new(
        topics.clone(),
        outbox.clone(),
        leases,
        config,
        Arc::new(|_| {}),
    )
    .unwrap();
    let delivery = tokio::spawn(Arc::new(deliverer).run());

    let trace = r#"{"trace_id":"t-1","time":1765007563000,"user":{"name":"alice","id":"u1"},
        "service_type":"ECS","trace_name":"deleteServer","resource_type":"ecs",
        "resource_name":"web-1","resource_id":"srv-42","source_ip":"10.0.0.7",
        "trace_rating":"warning","code":"204","project_id":"p1"}"#;
    outbox
        .enqueue(vec![OutboxMessage {
            message_id: "m-1".into(),
            project_id: P.into(),
            topic_urn: topic.urn.clone(),
            notification_id: "n-1".into(),
            notification_name: "deletes".into(),
            trace: RawValue::from_string(trace.into()).unwrap(),
        }])
        .unwrap();

    let start = Instant::now();
    while sink.messages().is_empty() {
        if start.elapsed() > Duration::from_secs(30) {
            let tried = outbox.deliveries(P, None, None, 0, 1).unwrap();
            panic!("no mail arrived: {:?}", tried[0].last_error);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = &sink.messages()[0];
    let meta: Value =
        serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
    assert_eq!(meta["login"], "cts", "sent after AUTH");
    assert_eq!(meta["mail_from"], "cts@example.com");
    assert_eq!(meta["rcpt_tos"][0], "ops@example.com");
    let mail = std::fs::read_to_string(path).unwrap();
    let (header, body) = parse(&mail);
    assert_eq!(
        header("Subject").unwrap(),
        "[CTS] deletes: alice deleteServer ecs web-1 (srv-42): warning"
    );
    assert_eq!(header("To").unwrap(), "ops@example.com");
    assert!(header("From").unwrap().contains("cts@example.com"));
    for needle in [
        "Who:       alice",
        "Did:       ECS deleteServer",
        "Resource:  ecs web-1 (srv-42)",
        "When:      2025-12-06 07:52:43 UTC",
        "From:      10.0.0.7",
        "Outcome:   warning (code 204)",
    ] {
        assert!(body.contains(needle), "{needle} in\n{body}");
    }
    let json_start = body.find("The trace:\n").unwrap() + "The trace:\n".len();
    let sent: Value = serde_json::from_str(body[json_start..].trim()).unwrap();
    assert_eq!(sent["resource_id"], "srv-42");

    // Recorded as delivered.
    let start = Instant::now();
    loop {
        let done = outbox
            .deliveries(P, Some(&sub.urn), Some(DeliveryState::Delivered), 0, 10)
            .unwrap();
        if done.len() == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    delivery.abort();
}
