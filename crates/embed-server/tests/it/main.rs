//! The server as its users meet it: the real model behind a real socket on 127.0.0.1:0, driven
//! over HTTP by reqwest (and raw TCP where a client misbehaves on purpose).
//!
//! Every server in this binary shares one `Embedder` (2 threads), so the model loads once.

mod lifecycle;
mod limits;
mod routes;

use std::sync::OnceLock;
use std::time::Duration;

use embed_runtime::{EmbedOptions, Embedder, Parallelism};
use embed_server::{RunningServer, Server, ServerBuilder};
use serde_json::Value;

/// The model, loaded once for the whole binary.
pub fn embedder() -> Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        Embedder::builder()
            .model(model_fetch::testing::gguf(model_fetch::OutType::Q8_0))
            .threads(2)
            .build()
            .expect("model loads")
    })
    .clone()
}

/// A server on the shared embedder with `configure`'s limits, ready to serve.
pub async fn start(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> (RunningServer, String) {
    let server = configure(Server::builder().embedder(embedder()))
        .bind("127.0.0.1:0")
        .await
        .expect("binds");
    server.wait_ready().await.expect("ready");
    let url = format!("http://{}", server.local_addr());
    (server, url)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// STS-B sentences from the reference set.
pub fn sts(n: usize) -> Vec<String> {
    let path = model_fetch::testing::reference_file("emb-dev-en.jsonl");
    std::fs::read_to_string(path)
        .expect("reference texts")
        .lines()
        .take(n)
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().to_owned())
        .collect()
}

/// A text past the model's 2048-token context (a forward pass of it takes a while).
pub fn long_text() -> String {
    sts(40).join(" ").repeat(8)
}

/// What the library gives for `text` alone with `options`.
pub fn library(text: &str, options: &EmbedOptions) -> Vec<f32> {
    embedder()
        .embed_with_options(&[text], options, Parallelism::Auto)
        .expect("library embeds")
        .row(0)
        .to_vec()
}

/// POSTs JSON and returns the status and the parsed body.
pub async fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = client().post(url).json(body).send().await.expect("request sent");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// One metric's value from `/metrics` (the sum over label sets whose labels contain `labels`).
pub async fn metric(url: &str, name: &str, labels: &str) -> f64 {
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            (metric == name && rest.contains(labels)).then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array of numbers")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// Waits (up to 30 s) until a metric reaches `at_least`: a test's way to know a request has
/// arrived or a pass has started, whatever the machine's load.
pub async fn wait_metric(base: &str, name: &str, labels: &str, at_least: f64) {
    let t = std::time::Instant::now();
    while metric(base, name, labels).await < at_least {
        assert!(t.elapsed() < Duration::from_secs(30), "{name} never reached {at_least}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
