//! Overload and misbehaving clients: every one answered, none stalling the server.

use std::time::{Duration, Instant};

use embed_runtime::EmbedOptions;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_429_at_once_and_stays_healthy() {
    let (server, base) = start(|b| b.max_concurrent_inputs(4).max_client_batch(3)).await;
    let texts = sts(64);
    let want: Vec<Vec<f32>> = texts.iter().map(|t| library(t, &EmbedOptions::default())).collect();
    let mut tasks = Vec::new();
    for c in 0..48usize {
        let base = base.clone();
        let idx: Vec<usize> = (0..1 + c % 3).map(|k| (c + k * 7) % 64).collect();
        let chunk: Vec<String> = idx.iter().map(|&i| texts[i].clone()).collect();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let (s, b) = post(&format!("{base}/v1/embeddings"), &json!({"input": chunk, "encoding_format": "float"})).await;
            (idx, s, b, t.elapsed())
        }));
    }
    let (mut ok, mut rejected) = (0, 0);
    for t in tasks {
        let (idx, s, b, took) = t.await.unwrap();
        match s {
            200 => {
                ok += 1;
                for (k, &i) in idx.iter().enumerate() {
                    assert_eq!(bits(&floats(&b["data"][k]["embedding"])), bits(&want[i]));
                }
            }
            429 => {
                rejected += 1;
                assert!(b["error"]["message"].as_str().unwrap().contains("--max-concurrent-inputs"), "{b}");
                assert!(took < Duration::from_secs(5), "a 429 is immediate, took {took:?}");
            }
            other => panic!("status {other}: {b}"),
        }
    }
    assert!(ok > 0 && rejected > 0, "{ok} served, {rejected} refused");
    assert_eq!(metric(&base, "te_request_rejected", "").await, rejected as f64);
    assert_eq!(metric(&base, "te_request_failure", "err=\"overloaded\"").await, rejected as f64);
    // Every permit came back: a full-size request is served, and the server is healthy.
    let (s, b) = post(&format!("{base}/v1/embeddings"), &json!({"input": texts[..3]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(client().get(format!("{base}/health")).send().await.unwrap().status(), 200);
    server.shutdown().await.unwrap();
}

/// Starts a request whose forward pass keeps the batcher busy for a while.
fn busy(base: &str, texts: usize) -> tokio::task::JoinHandle<(u16, Value)> {
    let url = format!("{base}/embed");
    let long = long_text();
    tokio::spawn(async move { post(&url, &json!({"inputs": vec![long; texts]})).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_timeout_answers_503_and_never_computes() {
    let (server, base) = start(|b| b.queue_timeout(Duration::from_millis(150))).await;
    let embedded = metric(&base, "te_embed_count", "").await;
    let slow = busy(&base, 2);
    wait_metric(&base, "te_batch_next_size_count", "", 1.0).await;
    let t = Instant::now();
    let (s, b) = post(&format!("{base}/v1/embeddings"), &json!({"input": ["late", "later"]})).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(b["error"]["code"], "queue_timeout", "{b}");
    assert!(t.elapsed() < Duration::from_secs(2), "answered at the timeout, not after the pass: {:?}", t.elapsed());
    let (s, b) = slow.await.unwrap();
    assert_eq!(s, 200, "{b}");
    // Only the long request's two inputs were computed.
    assert_eq!(metric(&base, "te_embed_count", "").await, embedded + 2.0);
    assert_eq!(metric(&base, "te_request_queue_timeout", "").await, 1.0);
    // The long request's second input waited longer than the timeout too, behind its first:
    // a request that has started is not cut, however long it runs (it answered 200 above).
    // Once the batcher has passed the expired inputs (a request after them was served), they
    // count as timed out, once, not also as dropped by a client that went away.
    let (s, _) = post(&format!("{base}/embed"), &json!({"inputs": "after"})).await;
    assert_eq!(s, 200);
    assert_eq!(metric(&base, "te_embed_count", "").await, embedded + 3.0);
    assert_eq!(metric(&base, "te_request_failure", "err=\"queue_timeout\"").await, 1.0);
    assert_eq!(metric(&base, "te_request_failure", "err=\"dropped\"").await, 0.0);
    assert_eq!(metric(&base, "te_input_dropped", "").await, 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_has_its_inputs_dropped() {
    let (server, base) = start(|b| b).await;
    let embedded = metric(&base, "te_embed_count", "").await;
    let slow = busy(&base, 2);
    wait_metric(&base, "te_batch_next_size_count", "", 1.0).await;
    // A raw client queues 5 inputs behind the long pass, then hangs up.
    let body = json!({"input": ["one", "two", "three", "four", "five"]}).to_string();
    let mut stream = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let request = format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    wait_metric(&base, "te_queue_size", "", 5.0).await;
    drop(stream);
    let (s, b) = slow.await.unwrap();
    assert_eq!(s, 200, "{b}");
    // The queue is empty again once the pass is over; nothing of the dropped request ran.
    let (s, _) = post(&format!("{base}/embed"), &json!({"inputs": "after"})).await;
    assert_eq!(s, 200);
    assert_eq!(metric(&base, "te_embed_count", "").await, embedded + 3.0);
    assert_eq!(metric(&base, "te_input_dropped", "").await, 5.0);
    assert_eq!(metric(&base, "te_request_failure", "err=\"dropped\"").await, 1.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_and_client_batch_limits() {
    let (server, base) = start(|b| b.payload_limit(1000).max_client_batch(4)).await;
    let big = "x".repeat(2000);
    let (s, b) = post(&format!("{base}/v1/embeddings"), &json!({"input": big})).await;
    assert_eq!(s, 413, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("1000"), "{b}");
    let (s, b) = post(&format!("{base}/embed"), &json!({"inputs": big})).await;
    assert_eq!(s, 413, "{b}");
    assert!(b["error"].as_str().unwrap().contains("payload limit"), "{b}");
    // Without a content-length (chunked), the limit still holds.
    let chunk = format!("{{\"inputs\": \"{big}\"}}");
    let request = format!(
        "POST /embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let answer = raw_http(server.local_addr(), &request).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A declared length past the limit is refused from the headers: a client that asks first
    // (`Expect: 100-continue`) is not invited to send it, and one that declares a terabyte and
    // sends nothing is answered at once, not after the body timeout.
    for (length, expect) in [("3000", "expect: 100-continue\r\n"), ("1000000000000", "")] {
        let request = format!(
            "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n{expect}\r\n"
        );
        let start = std::time::Instant::now();
        let answer = raw_http(server.local_addr(), &request).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
        assert!(start.elapsed() < Duration::from_secs(4), "answered from the headers");
    }

    let (s, b) = post(&format!("{base}/v1/embeddings"), &json!({"input": ["a", "b", "c", "d", "e"]})).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["param"], "input");
    assert!(b["error"]["message"].as_str().unwrap().contains("--max-client-batch"), "{b}");
    let (s, b) = post(&format!("{base}/embed"), &json!({"inputs": ["a", "b", "c", "d", "e"]})).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(metric(&base, "te_request_failure", "err=\"batch_size\"").await, 2.0);
    let (s, _) = post(&format!("{base}/embed"), &json!({"inputs": ["a", "b", "c", "d"]})).await;
    assert_eq!(s, 200);
    server.shutdown().await.unwrap();
}

/// Sends `request` as given and returns what the server answers until it closes or 5 s pass.
pub async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && String::from_utf8_lossy(&out).contains('}') {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_every_route_but_health() {
    let (server, base) = start(|b| b.api_key("s3cret")).await;
    let body = json!({"input": "x"});
    let r = client().post(format!("{base}/v1/embeddings")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_api_key", "{b}");
    let r = client().post(format!("{base}/embed")).bearer_auth("wrong").json(&json!({"inputs": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error_type"], "Unauthorized");
    assert_eq!(client().get(format!("{base}/metrics")).send().await.unwrap().status(), 401);
    assert_eq!(client().get(format!("{base}/info")).send().await.unwrap().status(), 401);
    assert_eq!(client().get(format!("{base}/health")).send().await.unwrap().status(), 200);
    let r = client().post(format!("{base}/v1/embeddings")).bearer_auth("s3cret").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(format!("{base}/metrics")).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await.unwrap();
}

/// A web page from an allowed origin can call the server, preflight and all, with the API key
/// on; other origins get no CORS headers (their browsers refuse the answer), and a server
/// without origins sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_lets_allowed_origins_call_and_no_others() {
    let app = "https://app.example";
    let (server, base) = start(|b| b.api_key("s3cret").cors_allow_origin([app, "http://localhost:3000"])).await;
    let url = format!("{base}/v1/embeddings");
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            // The official OpenAI JavaScript client sends headers of its own.
            .header("access-control-request-headers", "authorization, content-type, x-stainless-os")
            // Chrome's question before a public page calls a private address.
            .header("access-control-request-private-network", "true")
            .send()
    };
    // Browsers send no credentials on a preflight: it is answered before the key is asked for.
    let r = preflight(app).await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], app);
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"), "{h:?}");
    let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(["authorization", "content-type", "x-stainless-os"].iter().all(|x| allowed.contains(x)), "{allowed}");
    assert_eq!(h["access-control-allow-private-network"], "true");
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none(), "{:?}", r.headers());
    // The request itself: answered with the headers, and its refusals too, so a page can read why.
    let body = json!({"input": "hello"});
    let r = client().post(&url).header("origin", app).bearer_auth("s3cret").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], app);
    let exposed = r.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    for name in ["x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time", "x-compute-time", "x-compute-tokens", "x-compute-characters", "x-compute-type"] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
    let r = client().post(&url).header("origin", app).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], app);
    let r = client().post(&url).header("origin", "https://evil.example").bearer_auth("s3cret").json(&body).send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let info: Value = client().get(format!("{base}/info")).bearer_auth("s3cret").send().await.unwrap().json().await.unwrap();
    assert_eq!(info["cors_allow_origin"], json!([app, "http://localhost:3000"]));
    server.shutdown().await.unwrap();

    let (server, base) = start(|b| b).await;
    let r = client().post(format!("{base}/embed")).header("origin", app).json(&json!({"inputs": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    server.shutdown().await.unwrap();
    // An origin a browser never sends is refused before the socket is bound.
    for bad in ["app.example", "https://app.example/", "https://App.Example", "https://app.example:443", "*,https://app.example"] {
        let origins: Vec<&str> = bad.split(',').collect();
        let e = Server::builder().embedder(embedder()).cors_allow_origin(origins).bind("127.0.0.1:0").await.unwrap_err();
        assert!(e.to_string().contains("CORS origin") || e.to_string().contains("`*`"), "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_its_body_gets_408() {
    let (server, _) = start(|b| b.body_timeout(Duration::from_millis(200))).await;
    // Announces 100 bytes, sends 10, then goes quiet.
    let request = "POST /embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"inputs\":";
    let t = Instant::now();
    let answer = raw_http(server.local_addr(), request).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stopped sending"), "{answer}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    server.shutdown().await.unwrap();
}

/// Requests in progress are capped before their bodies are read: with two clients holding
/// half-sent bodies, a third request to each heavy route is answered 429 at once (OpenAI's shape
/// on `/v1/*`, TEI's elsewhere) while `/health`, `/info` and `/metrics` still answer; once the
/// two finish, requests are served again and every refusal was counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_max_concurrent_requests_are_refused_before_their_bodies_are_read() {
    let (server, base) = start(|b| b.max_concurrent_requests(2)).await;
    let addr = server.local_addr();
    let body = serde_json::to_string(&json!({"input": ["one text", "another"]})).unwrap();
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let (cut, rest) = body.split_at(5);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{head}{cut}").as_bytes()).await.unwrap();
        held.push(s);
    }
    // The two are admitted once the server has read their headers.
    let t = Instant::now();
    loop {
        let (s, _) = post(&format!("{base}/embed"), &json!({"inputs": "x"})).await;
        if s == 429 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "never refused (status {s})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut refused = 0;
    for (path, body) in [
        ("/v1/embeddings", json!({"input": "x"})),
        ("/embed", json!({"inputs": "x"})),
        ("/tokenize", json!({"inputs": "x"})),
    ] {
        let t = Instant::now();
        let (s, b) = post(&format!("{base}{path}"), &body).await;
        assert_eq!(s, 429, "{path}: {b}");
        assert!(t.elapsed() < Duration::from_secs(5), "a 429 is immediate");
        let message = if path.starts_with("/v1/") { &b["error"]["message"] } else { &b["error"] };
        assert!(message.as_str().unwrap().contains("--max-concurrent-requests"), "{path}: {b}");
        refused += 1;
    }
    for path in ["/health", "/info", "/metrics"] {
        assert_eq!(client().get(format!("{base}{path}")).send().await.unwrap().status(), 200, "{path}");
    }
    for mut s in held {
        s.write_all(rest.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 65536];
        use tokio::io::AsyncReadExt;
        while !String::from_utf8_lossy(&answer).contains("\"usage\"") {
            let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..64]));
    }
    let (s, b) = post(&format!("{base}/v1/embeddings"), &json!({"input": "x"})).await;
    assert_eq!(s, 200, "{b}");
    // The probe requests that found the server full count too.
    assert!(metric(&base, "te_request_rejected", "").await >= (refused + 1) as f64);
    server.shutdown().await.unwrap();
}

/// A request keeps its permit until its answer is sent, so clients that do not read their
/// answers cannot pile up responses in the server's memory: with room for one request, a
/// `/tokenize` answer of tens of MB left unread makes the next request a 429; once it has been
/// read to the end, the next one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_answer_keeps_its_permit_until_it_is_sent() {
    use tokio::io::AsyncReadExt;
    let (server, base) = start(|b| b.max_concurrent_requests(1)).await;
    // ~500,000 tokens of " a": about 30 MB of JSON, far more than the socket buffers hold.
    let body = serde_json::to_string(&json!({"inputs": "a ".repeat(500_000)})).unwrap();
    let request = format!(
        "POST /tokenize HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut slow = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    slow.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    slow.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the answer has started");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, b) = post(&format!("{base}/embed"), &json!({"inputs": "x"})).await;
    assert_eq!(s, 429, "the unread answer still holds the only permit: {b}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut rest)).await.expect("the answer ends").unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(rest.len() > 20 << 20 && text.trim_end().ends_with("]]"), "{} bytes", rest.len());
    drop(slow);
    let t = Instant::now();
    loop {
        let (s, b) = post(&format!("{base}/embed"), &json!({"inputs": "x"})).await;
        if s == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "the permit came back: {s} {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await.unwrap();
}
