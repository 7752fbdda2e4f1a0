//! The model's real tokenizer (EmbeddingGemma's 262,145 ids, from the cached GGUF or
//! `$GGUFEMBED_FUZZ_MODEL`) on arbitrary bytes as text; see `harness.rs`.
#![no_main]

use std::sync::OnceLock;

#[path = "../harness.rs"]
mod harness;

fn tokenizer() -> &'static embed_runtime::Tokenizer {
    static T: OnceLock<embed_runtime::Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let path = match std::env::var_os("GGUFEMBED_FUZZ_MODEL") {
            Some(p) => p.into(),
            None => model_fetch::ModelStore::open_default()
                .expect("a cache directory")
                .gguf_path(model_fetch::OutType::Q8_0),
        };
        embed_runtime::load_tokenizer(&path)
            .unwrap_or_else(|e| panic!("{e} (run `ggufembed fetch` or set GGUFEMBED_FUZZ_MODEL)"))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::tokenize(tokenizer(), data));
