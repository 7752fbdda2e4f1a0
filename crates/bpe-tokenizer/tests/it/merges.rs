//! The merge ranks derived from pieces and scores are tokenizer.json's merge list.

use rustc_hash::FxHashMap;

use crate::support;

#[test]
fn derived_merges_equal_tokenizer_json_merges() {
    let path = support::model_dir().join("tokenizer.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read tokenizer.json")).expect("parse");
    let model = &json["model"];
    assert_eq!(model["type"], "BPE");
    let vocab: FxHashMap<&str, u32> = model["vocab"]
        .as_object()
        .expect("vocab object")
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_u64().expect("id") as u32))
        .collect();
    let merges = model["merges"].as_array().expect("merges array");
    for tok in [support::gguf_tokenizer(), support::full_tokenizer()] {
        assert_eq!(tok.n_merges(), merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let l = m[0].as_str().expect("left");
            let r = m[1].as_str().expect("right");
            let merged = vocab[format!("{l}{r}").as_str()];
            assert_eq!(
                tok.merge_rule(vocab[l], vocab[r]),
                Some((rank as u32, merged)),
                "merge {rank}: {l:?} + {r:?}"
            );
        }
    }
}
