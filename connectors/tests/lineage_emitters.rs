//! The lineage emitters: a JSON-lines file, an HTTP endpoint (a local axum server playing
//! Marquez's `POST /api/v1/lineage`) and the no-op emitter.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use std::sync::{Arc, Mutex};
use syncmesh_connectors::lineage::{
    EventType, FileEmitter, HttpEmitter, LineageEmitter, LineageError, NoopEmitter, OutputDataset,
    RunEvent, RunEvents, new_run_id,
};

fn events() -> Vec<RunEvent> {
    let mut run = RunEvents::new("syncmesh://test", "job", new_run_id());
    vec![
        run.start(Vec::new(), vec![OutputDataset::new("sqlite://local", "t")]),
        run.complete(vec![
            OutputDataset::new("sqlite://local", "t").with_statistics(3, Some(99)),
        ]),
    ]
}

#[tokio::test]
async fn file_emitter_appends_one_event_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lineage.jsonl");
    let sent = events();
    {
        let emitter = FileEmitter::open(&path).await.unwrap();
        emitter.emit(&sent[0]).await.unwrap();
    }
    // Reopening appends rather than truncating.
    let emitter = FileEmitter::open(&path).await.unwrap();
    emitter.emit(&sent[1]).await.unwrap();
    let read: Vec<RunEvent> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(read, sent);
    NoopEmitter.emit(&sent[0]).await.unwrap();
}

type Seen = Arc<Mutex<Vec<(String, Option<String>, serde_json::Value)>>>;

async fn receive(
    State((seen, status)): State<(Seen, StatusCode)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, &'static str) {
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    seen.lock()
        .unwrap()
        .push((content_type, auth, serde_json::from_str(&body).unwrap()));
    (status, "lineage store says no")
}

async fn serve(status: StatusCode) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/api/v1/lineage", post(receive))
        .with_state((seen.clone(), status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn http_emitter_posts_to_the_marquez_endpoint() {
    let (base, seen) = serve(StatusCode::CREATED).await;
    let emitter = HttpEmitter::new(&format!("{base}/"))
        .unwrap()
        .with_api_key("t0ken");
    assert_eq!(emitter.endpoint(), format!("{base}/api/v1/lineage"));
    let sent = events();
    for event in &sent {
        emitter.emit(event).await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "application/json");
    assert_eq!(seen[0].1.as_deref(), Some("Bearer t0ken"));
    let first: RunEvent = serde_json::from_value(seen[0].2.clone()).unwrap();
    assert_eq!(first, sent[0]);
    assert_eq!(seen[1].2["eventType"], "COMPLETE");
    assert_eq!(first.event_type, EventType::Start);
}

#[tokio::test]
async fn http_emitter_reports_refusals_and_bad_urls() {
    let (base, _seen) = serve(StatusCode::UNPROCESSABLE_ENTITY).await;
    let emitter = HttpEmitter::new(&format!("{base}/api/v1/lineage")).unwrap();
    let err = emitter.emit(&events()[0]).await.unwrap_err();
    match &err {
        LineageError::Status { status, body, .. } => {
            assert_eq!(*status, 422);
            assert!(body.contains("says no"));
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(matches!(
        HttpEmitter::new("ftp://marquez"),
        Err(LineageError::Url { .. })
    ));
    // Nobody listens on port 9 of loopback: a transport error, not a panic.
    let unreachable = HttpEmitter::new("http://127.0.0.1:9").unwrap();
    assert!(matches!(
        unreachable.emit(&events()[0]).await,
        Err(LineageError::Http { .. })
    ));
}
