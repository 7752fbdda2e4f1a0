//! `ggufembed fetch` and `ggufembed convert` as a user runs them (real cache, real model).

use std::process::Command;

use model_fetch::{OutType, testing};

fn ggufembed() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ggufembed"))
}

#[test]
fn fetch_prints_the_cached_path_without_redoing_work() {
    let expected = testing::gguf(OutType::Q8_0);
    let before = std::fs::metadata(&expected).unwrap().modified().unwrap();
    let out = ggufembed().args(["fetch", "--type", "q8_0"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), expected.display().to_string());
    assert_eq!(std::fs::metadata(&expected).unwrap().modified().unwrap(), before, "a cached GGUF must be reused");

    let q4_k_m = testing::gguf(OutType::Q4_K_M);
    let out = ggufembed().args(["fetch", "--type", "q4_k_m"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), q4_k_m.display().to_string());

    let out = ggufembed().args(["fetch", "--type", "q4_k"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected one of f32, f16, bf16, q8_0, q4_k_m, q8_0-f16emb"));
}

#[test]
fn convert_writes_the_same_bytes_as_the_cache() {
    let src = testing::source_dir();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("q8.gguf");
    let out = ggufembed().arg("convert").arg(&src).arg(&out_path).args(["--type", "q8_0"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("316 tensors, 41 metadata keys, 262144 tokens"));
    // The folder is named embeddinggemma-300m, so llama.cpp's naming heuristics give the same
    // general.* keys as the cache's conversion: the files are identical.
    assert!(std::fs::read(&out_path).unwrap() == std::fs::read(testing::gguf(OutType::Q8_0)).unwrap());

    let out = ggufembed().arg("convert").arg(dir.path().join("absent")).arg(&out_path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing file"), "{}", String::from_utf8_lossy(&out.stderr));
}
