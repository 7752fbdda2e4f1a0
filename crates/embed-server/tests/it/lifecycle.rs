//! Loading, health, shutdown.

use std::time::{Duration, Instant};

use embed_server::{Server, ServerError};
use serde_json::{Value, json};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_loading_then_200() {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let server = Server::builder()
        .loader(move || {
            wait.recv().ok();
            Ok(embedder())
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    let r = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"].as_str().unwrap().contains("loading"), "{b}");
    let (s, b) = post(&format!("{base}/v1/embeddings"), &json!({"input": "x"})).await;
    assert_eq!(s, 503, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("loading"), "{b}");
    assert_eq!(client().get(format!("{base}/info")).send().await.unwrap().status(), 503);
    release.send(()).unwrap();
    server.wait_ready().await.unwrap();
    assert_eq!(client().get(format!("{base}/health")).send().await.unwrap().status(), 200);
    let (s, _) = post(&format!("{base}/v1/embeddings"), &json!({"input": "x"})).await;
    assert_eq!(s, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_fails_to_load_is_reported() {
    let server = Server::builder()
        .model("/nonexistent/model.gguf")
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    let e = server.wait_ready().await.unwrap_err();
    assert!(matches!(e, ServerError::Load(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
    let r = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let (s, _) = post(&format!("{base}/embed"), &json!({"inputs": "x"})).await;
    assert_eq!(s, 503);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_a_pass_runs_past_the_stall_timeout() {
    let (server, base) = start(|b| b.stall_timeout(Duration::from_millis(30))).await;
    let url = format!("{base}/embed");
    let slow = tokio::spawn(async move { post(&url, &json!({"inputs": [long_text()]})).await });
    let mut saw_stuck = false;
    let t = Instant::now();
    while !slow.is_finished() && t.elapsed() < Duration::from_secs(30) {
        let r = client().get(format!("{base}/health")).send().await.unwrap();
        if r.status() == 503 {
            let b: Value = r.json().await.unwrap();
            assert!(b["error"].as_str().unwrap().contains("stuck"), "{b}");
            saw_stuck = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_stuck, "a long pass shows as stuck");
    let (s, _) = slow.await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(client().get(format!("{base}/health")).send().await.unwrap().status(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_then_refuses_connections() {
    let (server, base) = start(|b| b).await;
    let addr = server.local_addr();
    let url = format!("{base}/embed");
    let in_flight = tokio::spawn(async move { post(&url, &json!({"inputs": [long_text(), "short"]})).await });
    wait_metric(&base, "te_batch_next_size_count", "", 1.0).await;
    server.shutdown().await.expect("a clean shutdown");
    let (s, b) = in_flight.await.unwrap();
    assert_eq!(s, 200, "the request in flight was finished: {b}");
    assert_eq!(b.as_array().unwrap().len(), 2);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_bounds_the_wait() {
    let (server, base) = start(|b| b.shutdown_deadline(Duration::from_millis(50))).await;
    let url = format!("{base}/embed");
    let texts: Vec<String> = (0..2).map(|_| long_text()).collect();
    let _in_flight = tokio::spawn(async move { post(&url, &json!({"inputs": texts})).await });
    wait_metric(&base, "te_batch_next_size_count", "", 1.0).await;
    let t = Instant::now();
    let e = server.shutdown().await.unwrap_err();
    assert!(matches!(e, ServerError::DeadlineExceeded(_)), "{e}");
    // The deadline, plus at most the pass that was running (seconds on a loaded machine, where
    // other tests share the embedder's pool); the second input is never started.
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_that_cannot_work_are_refused() {
    let e = Server::builder()
        .embedder(embedder())
        .max_concurrent_inputs(8)
        .max_client_batch(9)
        .bind("127.0.0.1:0")
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::Config(_)), "{e}");
    let e = Server::builder().embedder(embedder()).max_concurrent_requests(0).bind("127.0.0.1:0").await.unwrap_err();
    assert!(e.to_string().contains("max concurrent requests must be at least 1"), "{e}");
    let e = Server::builder().embedder(embedder()).bind("256.0.0.1:1").await.unwrap_err();
    assert!(matches!(e, ServerError::Bind { .. }), "{e}");
}

