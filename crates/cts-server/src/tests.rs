//! The router in process, over the real engine on a temporary directory: routes, status codes and
//! bodies of the HTTP layer. The real binary on the real engine is covered
//! by `tests/it`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use cts_identity::BootstrapSeed;
use cts_store::{EmbeddedStore, TraceStore};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::api::ops::OPENAPI_JSON;
use crate::app::routes;
use crate::backend::Backend;
use crate::broken_store::BrokenStore;
use crate::config::Config;
use crate::router;
use crate::state::{now_ms, AppState, Settings};

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

async fn call(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

/// The bootstrap admin's access key of every test app.
const AK: &str = "UNITTESTAK0000000001";
const SK: &str = "unit-test-secret-key-0123456789";

/// A request signed with the admin's key, as the official SDK signs.
fn signed(method: &str, uri: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    let mut headers = vec![("Content-Type".to_string(), content_type.to_string())];
    let url = format!("http://localhost{uri}");
    cts_sign::sign_request(
        method,
        &url,
        &mut headers,
        &body,
        AK,
        SK,
        cts_sign::unix_now(),
    )
    .unwrap();
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.body(Body::from(body)).unwrap()
}

fn get(uri: &str) -> Request<Body> {
    signed("GET", uri, "application/json", Vec::new())
}

fn post_json(uri: &str, body: impl Into<Vec<u8>>) -> Request<Body> {
    signed("POST", uri, "application/json", body.into())
}

/// The router over `store`, with identities and trackers (in their own
/// temporary directory): the admin holds project `p1` and the key `AK`.
fn app_with(config: Config, store: Arc<dyn TraceStore>) -> (tempfile::TempDir, Router) {
    let (dir, state) = state_with(config, store);
    (dir, router(state))
}

/// [`app_with`]'s state, for tests that reach past the router.
fn state_with(mut config: Config, store: Arc<dyn TraceStore>) -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().unwrap();
    config.data_dir = dir.path().to_path_buf();
    let settings = Settings::open(&config, &Backend::Embedded, store.clone()).unwrap();
    let seed = BootstrapSeed {
        project_id: Some("p1".into()),
        access_key: Some(AK.into()),
        secret_key: Some(SK.into()),
        ..BootstrapSeed::default()
    };
    settings
        .identity
        .bootstrap(
            &seed,
            "http://localhost",
            &dir.path().join("bootstrap.json"),
        )
        .unwrap();
    // CTS is enabled in p1: its management tracker records.
    settings
        .trackers
        .ensure_system_tracker("p1", "d1", now_ms())
        .unwrap();
    (dir, AppState::new(config, store, settings).unwrap())
}

/// The embedded engine in a temporary directory (kept alive by the caller).
fn engine(config: &mut Config) -> (tempfile::TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().unwrap();
    config.data_dir = dir.path().to_path_buf();
    let store = EmbeddedStore::open(config.store_config()).unwrap();
    (dir, Arc::new(store))
}

fn app() -> (tempfile::TempDir, tempfile::TempDir, Router) {
    let mut config = Config::default();
    let (dir, store) = engine(&mut config);
    let (identity_dir, app) = app_with(config, store);
    (dir, identity_dir, app)
}

fn trace(time: i64, code: &str) -> Value {
    json!({
        "time": time,
        "user": {"id": "u1", "name": "alice", "domain": {"id": "d1", "name": "acme"}},
        "service_type": "ECS",
        "resource_type": "server",
        "trace_name": "createServer",
        "trace_type": "ApiCall",
        "code": code,
        "source_ip": "10.0.0.1"
    })
}

fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.text);
    assert_eq!(a.body["error_code"], code, "{}", a.text);
    assert!(a.body["error_msg"].is_string(), "{}", a.text);
}

/// A concrete URI for an OpenAPI path template.
fn concrete(path: &str) -> String {
    path.replace("{project_id}", "p1")
        .replace("{tracker_name}", "system")
        .replace("{version}", "v3")
        .replace("{actor}", "users")
        .replace(['{', '}'], "")
}

#[tokio::test]
async fn routes_and_openapi_agree() {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json parses");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed: BTreeSet<String> = routes().iter().map(|r| r.path.to_string()).collect();
    assert_eq!(documented, routed);
    let documented_methods: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| m.as_str() != "parameters")
                .map(|m| (path.clone(), m.to_uppercase()))
        })
        .collect();
    let routed_methods: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.path.to_string(), r.method.to_string()))
        .collect();
    assert_eq!(documented_methods, routed_methods);

    // And the methods: documented ones are routed, others answer 405.
    let (_dir, _identity, app) = app();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            let req = Request::builder()
                .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                .uri(concrete(path))
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let a = call(&app, req).await;
            if item.get(method).is_some() {
                assert!(
                    ![404, 405].contains(&a.status.as_u16()),
                    "{method} {path}: {}",
                    a.status
                );
            } else {
                assert_error(&a, 405, "CTS.9003");
            }
        }
    }
}

#[tokio::test]
async fn report_then_query() {
    let (_dir, _identity, app) = app();
    let now = now_ms();
    let body = json!({"traces": [trace(now - 2000, "201"), trace(now - 1000, "404")]});
    let a = call(&app, post_json("/v3/p1/traces", body.to_string())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["recorded"], 2);
    assert_eq!(a.body["duplicates"], 0);
    let ids = a.body["trace_ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 2);

    let a = call(&app, get("/v3/p1/traces")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.body["meta_data"], json!({"count": 2, "marker": null}));
    // Newest first.
    assert_eq!(a.body["traces"][0]["trace_id"], ids[1]);
    assert_eq!(a.body["traces"][0]["trace_rating"], "warning");
    assert_eq!(a.body["traces"][1]["trace_rating"], "normal");

    let a = call(&app, get("/v3/p1/traces?limit=1")).await;
    assert_eq!(a.body["meta_data"]["marker"], ids[1]);
    let a = call(
        &app,
        get(&format!(
            "/v3/p1/traces?limit=1&next={}",
            ids[1].as_str().unwrap()
        )),
    )
    .await;
    assert_eq!(a.body["traces"][0]["trace_id"], ids[0]);
    assert_eq!(a.body["meta_data"]["marker"], Value::Null);

    let a = call(&app, get("/v2.0/p1/system/trace?trace_status=warning")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.body["meta_data"]["count"], 1);
    assert_eq!(a.body["traces"][0]["trace_status"], "warning");
    assert!(a.body["traces"][0]["user"].is_object());

    let a = call(&app, get("/v1.0/p1/system/trace")).await;
    assert_eq!(a.body["meta_data"]["count"], 2);
    assert!(a.body["traces"][0].get("trace_status").is_none());

    let a = call(&app, get("/v1.0/p1/other/trace")).await;
    assert_error(&a, 400, "CTS.0300");
    assert!(a.text.contains("tracker_name"));

    let metrics = call(&app, get("/metrics")).await;
    assert!(
        metrics.text.contains("cts_traces_accepted_total 2"),
        "{}",
        metrics.text
    );
    assert!(metrics
        .text
        .contains("cts_report_requests_total{code=\"201\"} 1"));
    assert!(metrics.text.contains("cts_indexed_traces 2"));
}

#[tokio::test]
async fn refused_requests() {
    let mut config = Config::default();
    config.limits.max_body_bytes = 4096;
    config.limits.max_traces_per_request = 2;
    let (_dir, store) = engine(&mut config);
    let (_identity, app) = app_with(config, store);
    let now = now_ms();

    let a = call(&app, post_json("/v3/p1/traces", vec![b' '; 4097])).await;
    assert_error(&a, 413, "CTS.9001");

    let a = call(&app, post_json("/v3/p1/traces", "{")).await;
    assert_error(&a, 400, "CTS.0003");
    assert_eq!(a.body["errors"][0]["field"], "body");

    let too_many = json!({"traces": [trace(now, "200"), trace(now, "200"), trace(now, "200")]});
    let a = call(&app, post_json("/v3/p1/traces", too_many.to_string())).await;
    assert_error(&a, 400, "CTS.0003");
    assert_eq!(a.body["errors"][0]["field"], "traces");

    let mut bad = trace(now, "200");
    bad["trace_name"] = json!("1bad");
    let batch = json!({"traces": [trace(now, "200"), bad]});
    let a = call(&app, post_json("/v3/p1/traces", batch.to_string())).await;
    assert_error(&a, 400, "CTS.0003");
    assert_eq!(
        a.body["errors"],
        json!([{"index": 1, "field": "trace_name", "rule": a.body["errors"][0]["rule"]}])
    );
    assert!(a.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("traces[1].trace_name"));

    let form = signed(
        "POST",
        "/v3/p1/traces",
        "application/x-www-form-urlencoded",
        b"a=b".to_vec(),
    );
    let a = call(&app, form).await;
    assert_error(&a, 400, "CTS.0003");
    assert_eq!(a.body["errors"][0]["field"], "Content-Type");

    // No project has such an id, so no credential is authorized for it.
    let a = call(&app, post_json("/v3/bad.project/traces", "{}")).await;
    assert_error(&a, 403, "CTS.0002");
    let a = call(&app, get("/v3/bad.project/traces")).await;
    assert_error(&a, 403, "CTS.0002");

    let a = call(&app, get("/v3/p1/traces?limit=500")).await;
    assert_error(&a, 400, "CTS.0300");
    assert!(a.body["error_msg"].as_str().unwrap().contains("limit"));

    let a = call(&app, get("/v3/p1/traces?limit=%ZZ")).await;
    assert_error(&a, 400, "CTS.0300");

    let a = call(&app, get("/no/where")).await;
    assert_error(&a, 404, "CTS.9002");

    let metrics = call(&app, get("/metrics")).await;
    assert!(
        metrics.text.contains("cts_traces_rejected_total 4"),
        "{}",
        metrics.text
    );
    assert!(metrics
        .text
        .contains("cts_report_requests_total{code=\"413\"} 1"));
}

#[tokio::test]
async fn store_failures() {
    let (_identity, app) = app_with(Config::default(), Arc::new(BrokenStore));
    let body = json!({"traces": [trace(now_ms(), "200")]});
    let a = call(&app, post_json("/v3/p1/traces", body.to_string())).await;
    assert_error(&a, 500, "CTS.0004");
    let a = call(&app, get("/v3/p1/traces")).await;
    assert_error(&a, 500, "CTS.0005");
    let a = call(&app, get("/readyz")).await;
    assert_error(&a, 503, "CTS.9004");
    let a = call(&app, get("/metrics")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text.contains("cts_report_requests_total{code=\"500\"} 1"));
}

#[tokio::test]
async fn health_and_request_ids() {
    let (_dir, _identity, app) = app();
    let a = call(&app, get("/healthz")).await;
    assert_eq!(a.body, json!({"status": "ok"}));
    let a = call(&app, get("/readyz")).await;
    assert_eq!(a.status, StatusCode::OK);
    let generated = &a.headers["x-request-id"];
    assert!(uuid::Uuid::parse_str(generated.to_str().unwrap()).is_ok());

    let req = Request::get("/no/where")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let a = call(&app, req).await;
    assert_eq!(a.headers["x-request-id"], "abc-123");
    assert_error(&a, 404, "CTS.9002");
}

#[tokio::test]
async fn expired_traces_never_show() {
    let mut config = Config::default();
    config.store.retention = Duration::from_secs(3600);
    let (_dir, store) = engine(&mut config);
    let (_identity, app) = app_with(config, store.clone());
    let now = now_ms();
    // Straight into the store: a trace past retention not yet dropped.
    let old = trace(now - 2 * 3_600_000, "200");
    let ctx = cts_model::ReportContext {
        project_id: "p1",
        now_ms: now,
        oldest_time_ms: 0,
        newest_time_ms: now,
        max_traces: 10,
    };
    let body = json!({"traces": [old]}).to_string();
    let traces = cts_model::parse_report(body.as_bytes(), &ctx).unwrap();
    let id = traces[0].trace_id.to_string();
    let prepared = traces.iter().map(cts_store::PreparedTrace::of).collect();
    store.append_prepared(prepared).unwrap();

    let from = now - 3 * 3_600_000;
    let a = call(&app, get(&format!("/v3/p1/traces?from={from}&to={now}"))).await;
    assert_eq!(a.body["meta_data"]["count"], 0, "{}", a.text);
    let a = call(&app, get(&format!("/v3/p1/traces?trace_id={id}"))).await;
    assert_eq!(a.body["meta_data"]["count"], 0, "{}", a.text);
}

/// A rule enabled through the API fires for the traces reported after it:
/// the matcher puts one message per trace into the outbox, with the whole
/// trace, for the topic's subscription.
#[tokio::test]
async fn reported_traces_fire_enabled_rules_into_the_outbox() {
    let mut config = Config::default();
    let (_dir, store) = engine(&mut config);
    let (_identity_dir, state) = state_with(config, store);
    let topic = state
        .topics
        .create_topic("p1", "eu", "alerts", "")
        .unwrap()
        .urn;
    let hook = "http://127.0.0.1:9/hook";
    let sub = state
        .topics
        .subscribe("p1", &topic, cts_smn::Protocol::Http, hook, "")
        .unwrap();
    let app = router(state.clone());
    let rule = json!({"notification_name": "failed_creates", "operation_type": "customized",
        "operations": [{"service_type": "ECS", "resource_type": "server", "trace_names": ["createServer"]}],
        "filter": {"is_support_filter": true, "condition": "AND", "rule": ["code != 201"]},
        "topic_id": topic});
    let a = call(&app, post_json("/v3/p1/notifications", rule.to_string())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.body["status"], "enabled");
    let now = now_ms();
    let body = json!({"traces": [trace(now, "201"), trace(now, "500"), trace(now, "403")]});
    let a = call(&app, post_json("/v3/p1/traces", body.to_string())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let notifier = state.notifier.clone();
    let pass = tokio::task::spawn_blocking(move || notifier.pass(16))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pass.fired, 2);
    let mut sent = state.outbox.deliveries("p1", None, None, 0, 10).unwrap();
    sent.reverse();
    let codes: Vec<String> = sent
        .iter()
        .map(|d| {
            assert_eq!(
                (d.subscription_urn.as_str(), d.topic_urn.as_str()),
                (sub.urn.as_str(), topic.as_str())
            );
            assert_eq!(d.notification_name, "failed_creates");
            let t: Value = serde_json::from_str(&d.trace).unwrap();
            t["code"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(codes, ["500", "403"]);
}
