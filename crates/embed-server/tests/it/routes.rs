//! Every route, its answers and its error shapes.

use base64::Engine;
use embed_runtime::{Dims, EmbedOptions, Prompt, Truncation};
use serde_json::{Value, json};

use crate::*;

fn base64_f32(s: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).expect("base64");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_input_forms_and_encodings_match_the_library() {
    let (server, url) = start(|b| b).await;
    let url = format!("{url}/v1/embeddings");
    let texts = sts(3);
    let e = embedder();
    let defaults = EmbedOptions::default();
    let want: Vec<Vec<f32>> = texts.iter().map(|t| library(t, &defaults)).collect();
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| e.tokenizer().encode(t)).collect();

    // A string.
    let (status, body) = post(&url, &json!({"input": texts[0], "model": "anything"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "embeddinggemma-300m");
    assert_eq!(body["data"][0]["object"], "embedding");
    assert_eq!(body["data"][0]["index"], 0);
    assert_eq!(bits(&floats(&body["data"][0]["embedding"])), bits(&want[0]));
    assert_eq!(body["usage"]["prompt_tokens"], ids[0].len());
    assert_eq!(body["usage"]["total_tokens"], ids[0].len());

    // An array of strings, float and base64: same bits, in order, real token counts.
    for format in ["float", "base64"] {
        let (status, body) = post(&url, &json!({"input": texts, "encoding_format": format, "user": "u1"})).await;
        assert_eq!(status, 200, "{body}");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d["index"], i);
            let v = match format {
                "float" => floats(&d["embedding"]),
                _ => base64_f32(d["embedding"].as_str().expect("a base64 string")),
            };
            assert_eq!(bits(&v), bits(&want[i]), "{format} input {i}");
        }
        let total: usize = ids.iter().map(Vec::len).sum();
        assert_eq!(body["usage"]["prompt_tokens"], total);
    }

    // Token ids: one array, and an array of arrays (the ids of the texts give the texts' vectors).
    let (status, body) = post(&url, &json!({"input": ids[1]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bits(&floats(&body["data"][0]["embedding"])), bits(&want[1]));
    let (status, body) = post(&url, &json!({"input": ids, "encoding_format": "base64"})).await;
    assert_eq!(status, 200, "{body}");
    for i in 0..3 {
        let v = base64_f32(body["data"][i]["embedding"].as_str().unwrap());
        assert_eq!(bits(&v), bits(&want[i]));
    }
    // Ids without <bos>/<eos> get them added.
    let bare = &ids[2][1..ids[2].len() - 1];
    let (status, body) = post(&url, &json!({"input": [bare]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bits(&floats(&body["data"][0]["embedding"])), bits(&want[2]));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_dimensions_and_prompt_name() {
    let (server, url) = start(|b| b).await;
    let url = format!("{url}/v1/embeddings");
    let text = &sts(1)[0];
    for d in [768, 512, 256, 128] {
        let (status, body) = post(&url, &json!({"input": [text], "dimensions": d})).await;
        assert_eq!(status, 200, "{body}");
        let v = floats(&body["data"][0]["embedding"]);
        assert_eq!(v.len(), d);
        assert!((norm(&v) - 1.0).abs() < 1e-5, "dimensions are renormalised as OpenAI does");
        let want = library(text, &EmbedOptions::default().with_dims(Dims::new(d).unwrap()).with_normalize(true));
        assert_eq!(bits(&v), bits(&want));
    }
    let (status, body) = post(&url, &json!({"input": text, "prompt_name": "query", "dimensions": 256})).await;
    assert_eq!(status, 200, "{body}");
    let want = library(
        text,
        &EmbedOptions::default()
            .with_prompt(Prompt::named("query").unwrap())
            .with_dims(Dims::new(256).unwrap())
            .with_normalize(true),
    );
    assert_eq!(bits(&floats(&body["data"][0]["embedding"])), bits(&want));
    // The prompt's tokens count.
    let with_prompt = embedder().tokenizer().encode(&format!("task: search result | query: {text}")).len();
    assert_eq!(body["usage"]["prompt_tokens"], with_prompt);
    server.shutdown().await.unwrap();
}

/// Asserts OpenAI's nested error shape and returns the message.
fn openai_error(status: u16, body: &Value, want_status: u16, param: Option<&str>) -> String {
    assert_eq!(status, want_status, "{body}");
    let e = &body["error"];
    assert!(e.is_object(), "nested error object: {body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(e.get("code").is_some(), "{body}");
    assert_eq!(e["param"].as_str(), param, "{body}");
    e["message"].as_str().expect("a message").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_errors_name_the_field() {
    let (server, base) = start(|b| b).await;
    let url = format!("{base}/v1/embeddings");
    let (s, b) = post(&url, &json!({"input": "x", "dimensions": 100})).await;
    let m = openai_error(s, &b, 422, Some("dimensions"));
    assert!(m.contains("768, 512, 256, 128"), "{m}");
    let (s, b) = post(&url, &json!({"input": "x", "dimensions": -3})).await;
    openai_error(s, &b, 422, Some("dimensions"));
    let (s, b) = post(&url, &json!({"input": "x", "prompt_name": "nope"})).await;
    let m = openai_error(s, &b, 422, Some("prompt_name"));
    assert!(m.contains("query") && m.contains("document"), "{m}");
    let (s, b) = post(&url, &json!({"input": "x", "encoding_format": "hex"})).await;
    openai_error(s, &b, 422, Some("encoding_format"));
    let (s, b) = post(&url, &json!({"input": []})).await;
    openai_error(s, &b, 400, Some("input"));
    let (s, b) = post(&url, &json!({"model": "m"})).await;
    openai_error(s, &b, 422, Some("input"));
    let (s, b) = post(&url, &json!({"input": ["ok", 7.5]})).await;
    openai_error(s, &b, 422, Some("input[1]"));
    let (s, b) = post(&url, &json!({"input": ["ok", [2, 262144, 1]]})).await;
    let m = openai_error(s, &b, 422, Some("input[1]"));
    assert!(m.contains("262144"), "{m}");
    let (s, b) = post(&url, &json!({"input": [[2, 5, 1]], "prompt_name": "query"})).await;
    openai_error(s, &b, 422, Some("prompt_name"));
    // Not JSON at all, and trailing garbage.
    for raw in ["{\"input\": ", "not json", "{\"input\": \"x\"} extra"] {
        let r = client().post(&url).header("content-type", "application/json").body(raw).send().await.unwrap();
        let s = r.status().as_u16();
        let b: Value = r.json().await.unwrap();
        openai_error(s, &b, 400, None);
    }
    // Unknown routes answer in the route family's shape.
    let r = client().get(format!("{base}/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let r = client().get(format!("{base}/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = client().get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["data"][0]["id"], "embeddinggemma-300m");
    // `models.retrieve`: the served model, or OpenAI's model_not_found.
    let r = client().get(format!("{base}/v1/models/embeddinggemma-300m")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["object"], "model");
    let r = client().get(format!("{base}/v1/models/gpt-4")).send().await.unwrap();
    let s = r.status().as_u16();
    let b: Value = r.json().await.unwrap();
    openai_error(s, &b, 404, Some("model"));
    assert_eq!(b["error"]["code"], "model_not_found");
    // A JSON array is not a request, though serde would read one by position (`input`,
    // `model`, `encoding_format`, `dimensions`).
    let r = client().post(&url).header("content-type", "application/json").body(r#"["hello", "m", "base64", 256]"#).send().await.unwrap();
    let s = r.status().as_u16();
    let m = openai_error(s, &r.json().await.unwrap(), 422, None);
    assert!(m.contains("object"), "{m}");
    // A route asked with the wrong method: 405 in the route's shape, with `Allow`.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = client().request(method, &url).send().await.unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "POST");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "method_not_allowed", "{b}");
    }
    let r = client().post(format!("{base}/info")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET,HEAD");
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    server.shutdown().await.unwrap();
}

/// Asserts TEI's flat error shape and returns the message.
fn tei_error(status: u16, body: &Value, want_status: u16, error_type: &str) -> String {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error_type"], error_type, "{body}");
    body["error"].as_str().expect("a flat error message").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tei_embed_options() {
    let (server, base) = start(|b| b).await;
    let url = format!("{base}/embed");
    let texts = sts(2);
    // A single string still answers a list of vectors, normalised by default.
    let (s, b) = post(&url, &json!({"inputs": texts[0]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(bits(&floats(&b[0])), bits(&library(&texts[0], &EmbedOptions::default())));
    // normalize: false keeps the raw Matryoshka prefix (not unit length).
    let (s, b) = post(&url, &json!({"inputs": texts, "dimensions": 128, "normalize": false})).await;
    assert_eq!(s, 200, "{b}");
    let want = library(&texts[1], &EmbedOptions::default().with_dims(Dims::new(128).unwrap()));
    assert_eq!(bits(&floats(&b[1])), bits(&want));
    assert!(norm(&want) < 0.999);
    let (s, b) = post(&url, &json!({"inputs": texts, "dimensions": 128})).await;
    assert_eq!(s, 200, "{b}");
    assert!((norm(&floats(&b[0])) - 1.0).abs() < 1e-5);
    // prompt_name, and truncation: right (default), left, or refused.
    let long = long_text();
    let (s, b) = post(&url, &json!({"inputs": [long], "prompt_name": "document"})).await;
    assert_eq!(s, 200, "{b}");
    let want = library(&long, &EmbedOptions::default().with_prompt(Prompt::named("document").unwrap()));
    assert_eq!(bits(&floats(&b[0])), bits(&want));
    let (s, b) = post(&url, &json!({"inputs": long, "truncate": true, "truncation_direction": "left"})).await;
    assert_eq!(s, 200, "{b}");
    let want = library(&long, &EmbedOptions::default().with_truncation(Truncation::Left));
    assert_eq!(bits(&floats(&b[0])), bits(&want));
    let (s, b) = post(&url, &json!({"inputs": ["short", long], "truncate": false})).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.contains("inputs[1]") && m.contains("2048"), "{m}");
    // TEI's error shape for the rest.
    let (s, b) = post(&url, &json!({"inputs": []})).await;
    tei_error(s, &b, 400, "Empty");
    let (s, b) = post(&url, &json!({"inputs": "x", "dimensions": 300})).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.contains("768, 512, 256, 128"), "{m}");
    let (s, b) = post(&url, &json!({"inputs": "x", "truncation_direction": "middle"})).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.contains("truncation_direction"), "{m}");
    let r = client().post(&url).header("content-type", "application/json").body("{").send().await.unwrap();
    let s = r.status().as_u16();
    tei_error(s, &r.json().await.unwrap(), 400, "Validation");
    let r = client().post(&url).header("content-type", "application/json").body(r#" ["x", false]"#).send().await.unwrap();
    let s = r.status().as_u16();
    tei_error(s, &r.json().await.unwrap(), 422, "Validation");
    // A compressed body is refused by name, not parsed as JSON that is not there.
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let m = tei_error(s, &r.json().await.unwrap(), 415, "Validation");
    assert!(m.contains("gzip"), "{m}");
    server.shutdown().await.unwrap();
}

/// TEI's other routes for an embedding model: `/` and `/invocations` (as `/embed`, or as
/// `/similarity` when `inputs` is an object), `/similarity`, `/decode`, `/embeddings`, and the
/// health probes `GET /` and `/ping`, which need no API key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tei_default_routes_similarity_and_decode() {
    let (server, base) = start(|b| b.api_key("k3y").max_client_batch(4)).await;
    let texts = sts(3);
    let defaults = EmbedOptions::default();
    let want: Vec<Vec<f32>> = texts.iter().map(|t| library(t, &defaults)).collect();
    let authed = |path: &str, body: Value| {
        let url = format!("{base}{path}");
        async move {
            let r = client().post(url).bearer_auth("k3y").json(&body).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };

    // `/` and `/invocations` answer as `/embed`, bit for bit; `/embeddings` as `/v1/embeddings`.
    for path in ["/", "/invocations"] {
        let (s, b) = authed(path, json!({"inputs": texts})).await;
        assert_eq!(s, 200, "{path}: {b}");
        for (i, w) in want.iter().enumerate() {
            assert_eq!(bits(&floats(&b[i])), bits(w), "{path} input {i}");
        }
        let (s, b) = authed(path, json!({"inputs": texts[0], "dimensions": 128})).await;
        assert_eq!(s, 200, "{path}: {b}");
        assert_eq!(floats(&b[0]).len(), 128);
        let (s, b) = authed(path, json!({"inputs": []})).await;
        tei_error(s, &b, 400, "Empty");
    }
    let (s, b) = authed("/embeddings", json!({"input": texts[2], "model": "m"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(bits(&floats(&b["data"][0]["embedding"])), bits(&want[2]));
    let (s, b) = authed("/embeddings", json!({"input": []})).await;
    openai_error(s, &b, 400, Some("input"));

    // Similarity: the cosine of the source to each sentence, on `/similarity` and on `/`.
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum::<f64>();
    let body = json!({"inputs": {"source_sentence": texts[0], "sentences": [texts[1], texts[2], texts[0]]}});
    for path in ["/similarity", "/", "/invocations"] {
        let (s, b) = authed(path, body.clone()).await;
        assert_eq!(s, 200, "{path}: {b}");
        let got = floats(&b);
        assert_eq!(got.len(), 3, "{path}: {b}");
        for (g, w) in got.iter().zip([&want[1], &want[2], &want[0]]) {
            assert!((f64::from(*g) - dot(&want[0], w)).abs() < 1e-6, "{path}: {g} vs {}", dot(&want[0], w));
        }
        assert!((got[2] - 1.0).abs() < 1e-6, "a sentence is itself: {}", got[2]);
    }
    // With a prompt: the prompted vectors' cosine.
    let q = EmbedOptions::default().with_prompt(Prompt::named("query").unwrap());
    let (s, b) = authed(
        "/similarity",
        json!({"inputs": {"source_sentence": texts[0], "sentences": [texts[1]]}, "parameters": {"prompt_name": "query"}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let w = dot(&library(&texts[0], &q), &library(&texts[1], &q));
    assert!((f64::from(floats(&b)[0]) - w).abs() < 1e-6, "{b} vs {w}");
    let (s, b) = authed("/similarity", json!({"inputs": {"source_sentence": "a", "sentences": []}})).await;
    let m = tei_error(s, &b, 400, "Empty");
    assert!(m.contains("inputs.sentences"), "{m}");
    // Errors name the field as the client wrote it, not as the route hands it on.
    let long = long_text();
    let body = json!({"inputs": {"source_sentence": "a", "sentences": ["b", long]}, "parameters": {"truncate": false}});
    let (s, b) = authed("/similarity", body).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.starts_with("`inputs.sentences[1]`"), "{m}");
    let (s, b) = authed("/similarity", json!({"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"prompt_name": "nope"}})).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.starts_with("`parameters.prompt_name`"), "{m}");
    let (s, b) = authed("/similarity", json!({"inputs": "a"})).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.contains("source_sentence") && !m.contains("struct"), "{m}");
    // `null` is the default, as for any optional field.
    let (s, b) = authed("/similarity", json!({"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"truncation_direction": null}})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = authed("/embed", json!({"inputs": "a", "truncation_direction": null})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = authed("/similarity", json!({"inputs": {"sentences": ["a"]}})).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.contains("source_sentence"), "{m}");
    // The source counts against the client batch limit: 1 + 4 > 4.
    let (s, b) = authed("/similarity", json!({"inputs": {"source_sentence": "a", "sentences": ["b", "c", "d", "e"]}})).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.contains("max-client-batch"), "{m}");

    // Decode: ids back to text, without `<bos>`/`<eos>` unless asked for.
    let e = embedder();
    let tok = e.tokenizer();
    let ids = tok.encode(&texts[1]);
    assert_eq!(tok.token_type(ids[0]), Some(bpe_tokenizer::TokenType::Control));
    let (s, b) = authed("/decode", json!({"ids": ids})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!([texts[1]]));
    let (s, b) = authed("/decode", json!({"ids": [ids, tok.encode("héllo wörld")], "skip_special_tokens": false})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!([format!("<bos>{}<eos>", texts[1]), "<bos>héllo wörld<eos>"]));
    let (s, b) = authed("/decode", json!({"ids": [[2, 9], [2, 4_000_000]]})).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.contains("ids[1]"), "{m}");
    let (s, b) = authed("/decode", json!({"ids": "text"})).await;
    tei_error(s, &b, 422, "Validation");
    let (s, b) = authed("/decode", json!({"ids": []})).await;
    tei_error(s, &b, 400, "Empty");
    let (s, b) = authed("/decode", json!({})).await;
    let m = tei_error(s, &b, 422, "Validation");
    assert!(m.contains("array of token ids") && !m.contains("string"), "{m}");
    // HF's special tokens only: `<mask>` and `<unusedN>` are ordinary added tokens there.
    let (s, b) = authed("/decode", json!({"ids": tok.encode("a <mask> b <unused0><start_of_turn>user")})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!(["a <mask> b <unused0>user"]));

    // Health probes answer without the key (GET or HEAD); the embedding routes do not, and only
    // refused embedding requests count as such in the metrics.
    for path in ["/", "/ping", "/health"] {
        let r = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        let r = client().head(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "HEAD {path}");
    }
    let unauthorized = || async {
        let r = client().get(format!("{base}/metrics")).bearer_auth("k3y").send().await.unwrap().text().await.unwrap();
        r.lines()
            .filter(|l| l.starts_with("te_request_failure{") && l.contains(r#"err="unauthorized""#))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let before = unauthorized().await;
    for path in ["/", "/similarity", "/decode", "/embeddings"] {
        let r = client().post(format!("{base}{path}")).json(&json!({"inputs": "x"})).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "POST {path}");
    }
    for method in [reqwest::Method::PUT, reqwest::Method::OPTIONS] {
        let r = client().request(method.clone(), format!("{base}/")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{method} /");
    }
    // `/`, `/similarity` and `/embeddings` are embedding requests; `/decode` and the rest are not.
    assert_eq!(unauthorized().await - before, 3.0);
    server.shutdown().await.unwrap();
}

/// TEI's timing headers: where a request's time went, in whole milliseconds, on both routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_headers_account_for_the_request() {
    let (server, base) = start(|b| b).await;
    let long = long_text();
    let texts = ["héllo wörld".to_owned(), long.clone()];
    let tokens: usize = texts
        .iter()
        .map(|t| embedder().prepare(t.as_str().into(), &EmbedOptions::default()).unwrap().tokens())
        .sum();
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    for (route, body) in [("/embed", json!({"inputs": texts})), ("/v1/embeddings", json!({"input": texts}))] {
        let r = client().post(format!("{base}{route}")).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{route}");
        let h = |name: &str| -> u64 {
            r.headers().get(name).unwrap_or_else(|| panic!("{route}: no {name}")).to_str().unwrap().parse().unwrap()
        };
        assert_eq!(r.headers()["x-compute-type"], "cpu", "{route}");
        assert_eq!(h("x-compute-tokens"), tokens as u64, "{route}");
        assert_eq!(h("x-compute-characters"), chars as u64, "{route}");
        let (total, tok, queue, inference) =
            (h("x-total-time"), h("x-tokenization-time"), h("x-queue-time"), h("x-inference-time"));
        assert_eq!(h("x-compute-time"), total, "{route}");
        // Three consecutive stretches of the request, each rounded down: never more than the whole.
        assert!(tok + queue + inference <= total, "{route}: {tok} + {queue} + {inference} > {total}");
        // A 2048-token pass takes far more than a millisecond on any CPU.
        assert!(inference >= 1, "{route}: inference {inference} ms");
        if route == "/v1/embeddings" {
            let b: Value = r.json().await.unwrap();
            assert_eq!(b["usage"]["prompt_tokens"], tokens, "{b}");
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_info_health_metrics() {
    let (server, base) = start(|b| b.max_client_batch(16).served_model_name("eg")).await;
    let e = embedder();
    let text = "Hello world";
    let (s, b) = post(&format!("{base}/tokenize"), &json!({"inputs": text})).await;
    assert_eq!(s, 200, "{b}");
    let ids: Vec<u32> = b[0].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap() as u32).collect();
    assert_eq!(ids, e.tokenizer().encode(text));
    assert_eq!(b[0][0]["special"], true, "<bos> is special: {b}");
    assert_eq!((&b[0][0]["start"], &b[0][0]["text"]), (&Value::Null, &json!("<bos>")));
    // As TEI gives them: byte ranges of the input and the text they cover (`▁world` is " world").
    let spans: Vec<(Value, Value, Value)> =
        b[0].as_array().unwrap()[1..ids.len() - 1].iter().map(|t| (t["text"].clone(), t["start"].clone(), t["stop"].clone())).collect();
    assert_eq!(spans, [(json!("Hello"), json!(0), json!(5)), (json!(" world"), json!(5), json!(11))], "{b}");
    assert_eq!(b[0][1]["special"], false);
    // A literal added token in the text is text, not special; offsets are bytes.
    let (s, b) = post(&format!("{base}/tokenize"), &json!({"inputs": "é<start_of_turn>x"})).await;
    assert_eq!(s, 200, "{b}");
    let t = &b[0].as_array().unwrap()[1..4];
    assert_eq!(t[0]["text"], "é");
    assert_eq!((&t[1]["text"], &t[1]["special"], &t[1]["start"], &t[1]["stop"]), (&json!("<start_of_turn>"), &json!(false), &json!(2), &json!(17)));
    assert_eq!((&t[2]["start"], &t[2]["stop"]), (&json!(17), &json!(18)));
    let (s, b) = post(
        &format!("{base}/tokenize"),
        &json!({"inputs": [text, "x"], "add_special_tokens": false, "prompt_name": "query"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let mut want = e.tokenizer().encode(&format!("task: search result | query: {text}"));
    want.remove(0);
    want.pop();
    assert_eq!(b[0].as_array().unwrap().len(), want.len());
    assert_eq!(b.as_array().unwrap().len(), 2);
    // With a prompt the ranges are in the prompted text, as TEI's are.
    let last = b[0].as_array().unwrap().last().unwrap();
    let full = format!("task: search result | query: {text}");
    assert_eq!(last["stop"], full.len(), "{b}");
    assert_eq!(last["text"], " world");

    let info: Value = client().get(format!("{base}/info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["model_id"], "eg");
    assert_eq!(info["max_client_batch_size"], 16);
    assert_eq!(info["max_input_length"], 2048);
    assert_eq!(info["max_batch_tokens"], embed_server::DEFAULT_MAX_BATCH_TOKENS);
    assert_eq!(info["max_concurrent_requests"], embed_server::DEFAULT_MAX_CONCURRENT_REQUESTS);
    assert_eq!(info["max_concurrent_inputs"], embed_server::DEFAULT_MAX_CONCURRENT_INPUTS);
    assert_eq!(info["defaults"]["dimensions"], 768);
    assert_eq!(info["defaults"]["truncation"], "right");
    // What a request that leaves `normalize` out gets (see `tei_embed_options`).
    assert_eq!(info["defaults"]["normalize"], true);
    assert_eq!(info["auto_truncate"], true);
    assert_eq!(info["dimensions"], json!([768, 512, 256, 128]));
    assert_eq!(info["threads"], 2);
    assert_eq!(info["prompts"]["query"], "task: search result | query: ");

    let r = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let before = metric(&base, "te_request_count", "method=\"batch\"").await;
    let (s, _) = post(&format!("{base}/v1/embeddings"), &json!({"input": ["a", "b"]})).await;
    assert_eq!(s, 200);
    let r = client().get(format!("{base}/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for name in [
        "te_request_count",
        "te_request_success",
        "te_request_duration_bucket",
        "te_request_tokenization_duration_bucket",
        "te_request_queue_duration_bucket",
        "te_request_inference_duration_bucket",
        "te_request_input_length_bucket",
        "te_batch_next_size_bucket",
        "te_batch_next_tokens_bucket",
        "te_queue_size",
        "te_embed_count",
        "te_request_rejected",
        "te_request_queue_timeout",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(metric(&base, "te_request_count", "method=\"batch\"").await, before + 1.0);
    assert!(metric(&base, "te_embed_count", "").await >= 2.0);
    // Every failure is also a request: one refused before its inputs were read counts under
    // method "unknown", so failure / count is an error rate. /tokenize is not counted.
    let total = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let before = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for body in [r#"{"input": "#, r#"{"input": []}"#, r#"{"input": "x", "dimensions": 3}"#, r#"["x"]"#] {
        let r = client().post(format!("{base}/v1/embeddings")).header("content-type", "application/json").body(body).send().await.unwrap();
        assert!(r.status().is_client_error(), "{body}");
    }
    let (s, _) = post(&format!("{base}/embed"), &json!({"inputs": "ok"})).await;
    assert_eq!(s, 200);
    let (s, _) = post(&format!("{base}/tokenize"), &json!({"inputs": []})).await;
    assert_eq!(s, 400);
    let after = client().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let delta = |name: &str| total(&after, name) - total(&before, name);
    assert_eq!((delta("te_request_count"), delta("te_request_failure"), delta("te_request_success")), (5.0, 4.0, 1.0));
    server.shutdown().await.unwrap();
}

/// Concurrent requests with different prompts, dimensions, normalisation and truncation share
/// passes; each text's vector is still the library's for that text alone, bit for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mixed_requests_are_bit_identical_to_the_library() {
    let (server, base) = start(|b| b.max_batch_tokens(512)).await;
    let texts = sts(52);
    let prompts = [None, Some("query"), Some("document"), Some("STS")];
    let dims = [768, 512, 256, 128];
    let mut tasks = Vec::new();
    for r in 0..24usize {
        let chunk: Vec<String> = texts[(r * 2) % 48..(r * 2) % 48 + 1 + r % 3].to_vec();
        let prompt = prompts[r % 4];
        let d = dims[(r / 4) % 4];
        let openai = r % 2 == 0;
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let (url, body) = if openai {
                let mut body = json!({"input": chunk, "dimensions": d, "encoding_format": "base64"});
                if let Some(p) = prompt {
                    body["prompt_name"] = json!(p);
                }
                (format!("{base}/v1/embeddings"), body)
            } else {
                let mut body = json!({"inputs": chunk, "dimensions": d, "normalize": r % 3 != 0});
                if let Some(p) = prompt {
                    body["prompt_name"] = json!(p);
                }
                (format!("{base}/embed"), body)
            };
            let (status, body) = post(&url, &body).await;
            (r, chunk, prompt, d, openai, status, body)
        }));
    }
    for t in tasks {
        let (r, chunk, prompt, d, openai, status, body) = t.await.unwrap();
        assert_eq!(status, 200, "request {r}: {body}");
        let mut options = EmbedOptions::default().with_dims(Dims::new(d).unwrap());
        if let Some(p) = prompt {
            options = options.with_prompt(Prompt::named(p).unwrap());
        }
        options = options.with_normalize(openai || r % 3 != 0);
        for (i, text) in chunk.iter().enumerate() {
            let got = if openai {
                base64_f32(body["data"][i]["embedding"].as_str().unwrap())
            } else {
                floats(&body[i])
            };
            assert_eq!(bits(&got), bits(&library(text, &options)), "request {r} text {i}");
        }
    }
    // Passes really were shared.
    let passes = metric(&base, "te_batch_next_size_count", "").await;
    let inputs = metric(&base, "te_batch_next_size_sum", "").await;
    assert!(inputs > passes, "{inputs} inputs in {passes} passes");
    server.shutdown().await.unwrap();
}
