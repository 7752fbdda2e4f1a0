//! The built binary, run on files the gguf-format writer produces.

use std::path::Path;
use std::process::{Command, Output};

use gguf_format::{GgmlType, GgufWriter, OwnedArray};
use serde_json::Value as Json;

fn ggufembed(args: &[&str], file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ggufembed"))
        .args(args)
        .arg(file)
        .output()
        .unwrap()
}

fn small_file(dir: &Path) -> std::path::PathBuf {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "gemma-embedding")
        .unwrap();
    w.add_metadata("gemma-embedding.block_count", 24u32)
        .unwrap();
    w.add_metadata("gemma-embedding.rope.freq_base", 1e6f32)
        .unwrap();
    w.add_metadata("tokenizer.ggml.add_bos_token", true)
        .unwrap();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        vec![
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "<mask>",
            "\u{2581}a",
            "b",
        ],
    )
    .unwrap();
    w.add_metadata(
        "nested",
        OwnedArray::Array(vec![
            OwnedArray::I32(vec![1, 2]),
            OwnedArray::Str(vec!["x".into()]),
        ]),
    )
    .unwrap();
    w.add_tensor("token_embd.weight", &[32, 7], GgmlType::Q8_0)
        .unwrap();
    w.add_tensor("output_norm.weight", &[32], GgmlType::F32)
        .unwrap();
    let bytes = w.to_bytes(&[&[1; 7 * 34], &[2; 128]]).unwrap();
    let path = dir.join("small.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn inspect_prints_header_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file(dir.path());
    let out = ggufembed(&["inspect"], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "gguf version: 3",
        "alignment: 32",
        "metadata: 6 keys",
        "  general.architecture | STRING | \"gemma-embedding\"",
        "  gemma-embedding.block_count | UINT32 | 24",
        "  gemma-embedding.rope.freq_base | FLOAT32 | 1000000.0",
        "  tokenizer.ggml.add_bos_token | BOOL | true",
        "  tokenizer.ggml.tokens | ARRAY[STRING] | len=7 [\"<pad>\", \"<eos>\", \"<bos>\", \"<unk>\", \"<mask>\", ...]",
        "  nested | ARRAY[ARRAY] | len=2 [len=2 [1, 2], len=1 [\"x\"]]",
        "tensors: 2",
        "  0 | token_embd.weight | [32, 7] | Q8_0 | 238 | 544 | 0",
        "  1 | output_norm.weight | [32] | F32 | 128 | 800 | 256",
        "tensor types: F32=1 Q8_0=1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in\n{text}"
        );
    }
    assert!(text.contains("data offset: 544"), "{text}");
}

#[test]
fn inspect_json_is_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_file(dir.path());
    let out = ggufembed(&["inspect", "--json"], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["version"], 3);
    assert_eq!(doc["alignment"], 32);
    assert_eq!(doc["data_offset"], 544);
    let keys: Vec<&str> = doc["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "gemma-embedding.block_count",
            "gemma-embedding.rope.freq_base",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.tokens",
            "nested"
        ]
    );
    let tokens = &doc["metadata"][4];
    assert_eq!(tokens["type"], "ARRAY");
    assert_eq!(tokens["elem_type"], "STRING");
    assert_eq!(tokens["len"], 7);
    assert_eq!(tokens["truncated"], true);
    assert_eq!(tokens["value"].as_array().unwrap().len(), 5);
    assert_eq!(doc["metadata"][2]["value"], 1e6);
    assert_eq!(
        doc["metadata"][5]["value"][0]["values"],
        serde_json::json!([1, 2])
    );
    let t = &doc["tensors"][0];
    assert_eq!(t["name"], "token_embd.weight");
    assert_eq!(t["shape"], serde_json::json!([32, 7]));
    assert_eq!(t["type"], "Q8_0");
    assert_eq!(t["n_bytes"], 238);
    assert_eq!(t["offset"], 544);
    assert_eq!(
        doc["tensor_types"],
        serde_json::json!({"F32": 1, "Q8_0": 1})
    );

    let full = ggufembed(&["inspect", "--json", "--full-arrays"], &path);
    let doc: Json = serde_json::from_slice(&full.stdout).unwrap();
    assert_eq!(doc["metadata"][4]["value"].as_array().unwrap().len(), 7);
    assert_eq!(doc["metadata"][4]["value"][5], "\u{2581}a");
    assert_eq!(doc["metadata"][4]["truncated"], false);
}

#[test]
fn bad_files_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(small_file(dir.path())).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    // Cut inside the first tensor's data (bytes 544..782).
    std::fs::write(&truncated, &good[..700]).unwrap();
    let mut bad_type = good.clone();
    // The first tensor info's type id (Q8_0 = 8) becomes 99.
    let at = bad_type
        .windows(17)
        .position(|w| w == b"token_embd.weight")
        .unwrap()
        + 17
        + 4
        + 16;
    assert_eq!(bad_type[at], 8);
    bad_type[at] = 99;
    let bad_type_path = dir.path().join("badtype.gguf");
    std::fs::write(&bad_type_path, &bad_type).unwrap();
    let not_gguf = dir.path().join("text.gguf");
    std::fs::write(&not_gguf, "hello world").unwrap();

    for (path, needle) in [
        (truncated, "tensor \"token_embd.weight\" data spans bytes"),
        (bad_type_path, "unknown ggml type 99"),
        (not_gguf, "not a gguf file"),
        (dir.path().join("absent.gguf"), "absent.gguf"),
    ] {
        for json in [false, true] {
            let args: &[&str] = if json {
                &["inspect", "--json"]
            } else {
                &["inspect"]
            };
            let out = ggufembed(args, &path);
            assert!(!out.status.success());
            assert!(out.stdout.is_empty());
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
        }
    }
}

/// The llama.cpp-made Gemma 3 270M file: the figures an independent reader of the format
/// (a few lines of Python `struct`) reports for it.
#[test]
fn inspect_json_on_a_real_llama_cpp_file() {
    let path = match std::env::var_os("GGUFEMBED_TEST_GEMMA3") {
        Some(p) => p.into(),
        None => model_fetch::testing::gemma3_270m(),
    };
    let out = ggufembed(&["inspect", "--json"], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["version"].as_u64(), doc["data_offset"].as_u64()),
        (Some(3), Some(6_525_120))
    );
    assert_eq!(doc["metadata_count"], 33);
    assert_eq!(doc["tensor_count"], 236);
    assert_eq!(
        doc["tensor_types"],
        serde_json::json!({"F32": 109, "Q4_K": 27, "Q5_0": 81, "Q6_K": 9, "Q8_0": 10})
    );
    let tensors = doc["tensors"].as_array().unwrap();
    assert_eq!(tensors[1]["name"], "token_embd.weight");
    assert_eq!(tensors[1]["shape"], serde_json::json!([640, 262144]));
    assert_eq!(tensors[1]["offset"], 6_527_680);
    assert_eq!(tensors[235]["name"], "blk.17.post_ffw_norm.weight");
    assert_eq!(tensors[235]["relative_offset"], 246_585_344);
    let tokens = doc["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "tokenizer.ggml.tokens")
        .unwrap();
    assert_eq!(tokens["len"], 262_144);
}
