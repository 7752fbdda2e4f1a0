//! Which pipeline stage a stack belongs to, decided from symbol names alone.
//!
//! Both the CPU samples and the allocation sites are attributed the same way: walk the stack from
//! the innermost frame outwards and take the first frame whose code lives in one of the project's
//! crates. Frames of `alloc`, `core` or `std` (a `Vec::with_capacity` inlined into a model
//! function, say) are skipped, so an allocation is charged to the project function that asked for
//! it. A stack with no project frame is `Scheduler` when the thread pool is on it (idle workers,
//! job queues) and `Other` otherwise; nothing is guessed.

use std::fmt;

/// A stage of the embedding pipeline, as reported in the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Text to token ids (`bpe_tokenizer`).
    Tokenize,
    /// Activations quantized to the weight format's partner before a matmul.
    QuantizeActivations,
    /// Quantized GEMM/dot kernels and the model's linear layers around them (dense head included).
    Matmul,
    /// Scores, softmax and the weighted sum of values.
    Attention,
    /// Mean pooling and normalisation (the dense head's matmuls count as `Matmul`).
    Pooling,
    /// The rest of the forward pass: embedding lookup, norms, RoPE, GELU, residuals.
    ModelOther,
    /// `embed_runtime`: batching, planning, result assembly.
    Runtime,
    /// Thread-pool machinery with no project code on the stack (idle or stealing workers).
    Scheduler,
    /// Anything else (the harness, the allocator, libc).
    Other,
}

impl Stage {
    /// Every stage, in report order.
    pub const ALL: [Stage; 9] = [
        Stage::Tokenize,
        Stage::QuantizeActivations,
        Stage::Matmul,
        Stage::Attention,
        Stage::Pooling,
        Stage::ModelOther,
        Stage::Runtime,
        Stage::Scheduler,
        Stage::Other,
    ];

    /// Short label used in tables and CSV.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Tokenize => "tokenize",
            Stage::QuantizeActivations => "quantize activations",
            Stage::Matmul => "matmul (linear layers, dense head)",
            Stage::Attention => "attention",
            Stage::Pooling => "pooling (mean, normalise)",
            Stage::ModelOther => "model (norm, rope, gelu, embed)",
            Stage::Runtime => "runtime (embed_runtime)",
            Stage::Scheduler => "scheduler (thread pool)",
            Stage::Other => "other",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The path of the code a demangled symbol names: for `<T as Trait>::f` that is `T`'s path, for
/// `a::b<c::D>::f` it is `a::b`. Generic arguments are dropped, since a `Vec<gemma_model::X>`
/// method is `alloc` code, not model code.
pub fn code_path(symbol: &str) -> &str {
    let s = symbol.trim_start_matches(['<', '&', ' ']);
    let s = s.strip_prefix("mut ").unwrap_or(s);
    let s = s.strip_prefix("dyn ").unwrap_or(s);
    let end = s
        .find(|c: char| c == '<' || c == '>' || c == ' ' || c == '(' || c == '[')
        .unwrap_or(s.len());
    &s[..end]
}

/// The stage of one symbol, or `None` when its code is not one of the project's crates.
pub fn classify_symbol(symbol: &str) -> Option<Stage> {
    let path = code_path(symbol);
    let (krate, rest) = path.split_once("::").unwrap_or((path, ""));
    let segments: Vec<&str> = rest.split("::").collect();
    let any = |pred: &dyn Fn(&str) -> bool| segments.iter().any(|s| pred(s));
    match krate {
        "bpe_tokenizer" => Some(Stage::Tokenize),
        "quant_kernels" => {
            // Dequantization of whole rows serves the embedding lookup, not a matmul.
            if any(&|s| s.contains("dequant")) {
                Some(Stage::ModelOther)
            } else if any(&|s| s.starts_with("quant") || s.contains("quantize") || s.contains("from_f32")) {
                Some(Stage::QuantizeActivations)
            } else {
                Some(Stage::Matmul)
            }
        }
        "gemma_model" => {
            if any(&|s| s.starts_with("attention") || s.starts_with("attend") || s.contains("softmax")) {
                Some(Stage::Attention)
            } else if any(&|s| s.starts_with("pool") || s.contains("dense") || s.contains("normalize") || s.contains("matryoshka")) {
                Some(Stage::Pooling)
            } else if any(&|s| s.starts_with("linear") || s.contains("matmul") || s.contains("gemm")) {
                Some(Stage::Matmul)
            } else if any(&|s| s.contains("quantize")) {
                Some(Stage::QuantizeActivations)
            } else {
                Some(Stage::ModelOther)
            }
        }
        "embed_runtime" => Some(Stage::Runtime),
        _ => None,
    }
}

/// True for frames of the thread pool and its queues.
fn is_scheduler(symbol: &str) -> bool {
    let path = code_path(symbol);
    path.starts_with("rayon_core::") || path.starts_with("crossbeam_deque::") || path.starts_with("crossbeam_epoch::")
}

/// The stage of a whole stack, innermost frame first.
///
/// One exception to "innermost project frame wins": attention runs its score and value products
/// on the kernels' f32 GEMM, so a kernel frame whose nearest model caller is in
/// `gemma_model::attention` is attention time, not matmul time.
pub fn classify_stack<'a>(frames: impl IntoIterator<Item = &'a str>) -> Stage {
    let mut scheduler = false;
    let mut kernel: Option<Stage> = None;
    for name in frames {
        let Some(stage) = classify_symbol(name) else {
            scheduler |= is_scheduler(name);
            continue;
        };
        let is_kernel = code_path(name).starts_with("quant_kernels::");
        match kernel {
            None if is_kernel => kernel = Some(stage),
            None => return stage,
            Some(_) if is_kernel => {}
            Some(k) => return if stage == Stage::Attention { Stage::Attention } else { k },
        }
    }
    if let Some(k) = kernel {
        return k;
    }
    if scheduler { Stage::Scheduler } else { Stage::Other }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_path_drops_generics_and_trait_impls() {
        assert_eq!(code_path("gemma_model::attention::attend::{{closure}}"), "gemma_model::attention::attend::{{closure}}");
        assert_eq!(code_path("<embed_runtime::pool::Fine as quant_kernels::ParallelFor>::run"), "embed_runtime::pool::Fine");
        assert_eq!(code_path("alloc::raw_vec::RawVec<gemma_model::scratch::Buf>::grow_one"), "alloc::raw_vec::RawVec");
        assert_eq!(code_path("core::ptr::drop_in_place<gemma_model::forward::Scratch>"), "core::ptr::drop_in_place");
        assert_eq!(code_path("<&mut bpe_tokenizer::bpe::Word as core::fmt::Debug>::fmt"), "bpe_tokenizer::bpe::Word");
    }

    #[test]
    fn symbols_map_to_their_stage() {
        let cases = [
            ("bpe_tokenizer::bpe::Word::merge_all", Some(Stage::Tokenize)),
            ("quant_kernels::x86_64::avx512::quant_row_q8_0", Some(Stage::QuantizeActivations)),
            ("quant_kernels::scalar::quant::quantize_row_q8_0", Some(Stage::QuantizeActivations)),
            ("quant_kernels::gemm::gemm_q8_0::{{closure}}", Some(Stage::Matmul)),
            ("quant_kernels::x86_64::avx512::dot_q8_0_q8_0", Some(Stage::Matmul)),
            ("quant_kernels::scalar::dequant::dequant_row_q8_0", Some(Stage::ModelOther)),
            ("gemma_model::attention::attend_window", Some(Stage::Attention)),
            ("gemma_model::pooling::mean_pool", Some(Stage::Pooling)),
            ("gemma_model::linear::Linear::forward", Some(Stage::Matmul)),
            ("gemma_model::norm::rms_norm", Some(Stage::ModelOther)),
            ("gemma_model::rope::apply", Some(Stage::ModelOther)),
            ("embed_runtime::Embedder::embed_with", Some(Stage::Runtime)),
            ("alloc::raw_vec::RawVec<gemma_model::scratch::Buf>::grow_one", None),
            ("rayon_core::registry::WorkerThread::wait_until_cold", None),
            ("xtask::bench_matrix::run", None),
        ];
        for (sym, want) in cases {
            assert_eq!(classify_symbol(sym), want, "{sym}");
        }
    }

    #[test]
    fn stack_takes_the_innermost_project_frame() {
        let stack = [
            "alloc::raw_vec::finish_grow",
            "alloc::vec::Vec<T>::with_capacity",
            "quant_kernels::scalar::quant::quantize_row_q8_0",
            "gemma_model::linear::Linear::forward",
            "embed_runtime::Embedder::embed_with",
        ];
        assert_eq!(classify_stack(stack), Stage::QuantizeActivations);
    }

    #[test]
    fn kernel_time_under_attention_is_attention() {
        let stack = [
            "quant_kernels::x86_64::avx512::f32_impl",
            "quant_kernels::gemm::run_f32",
            "quant_kernels::gemm::gemm_f32_nt",
            "gemma_model::attention::attend_block",
            "gemma_model::forward::layer_forward",
        ];
        assert_eq!(classify_stack(stack), Stage::Attention);
        let linear = ["quant_kernels::x86_64::avx512::int8_vnni", "quant_kernels::gemm::run_int8", "gemma_model::linear::Linear::forward", "gemma_model::forward::layer_forward"];
        assert_eq!(classify_stack(linear), Stage::Matmul);
        let quant = ["quant_kernels::gemm::act::quant_act_q8_0", "quant_kernels::gemm::GemmScratch::quantize", "gemma_model::linear::Linear::forward"];
        assert_eq!(classify_stack(quant), Stage::QuantizeActivations);
        // a kernel called from no model code keeps its own stage
        assert_eq!(classify_stack(["quant_kernels::gemm::run_int8", "rayon_core::join"]), Stage::Matmul);
    }

    #[test]
    fn stacks_without_project_code_are_scheduler_or_other() {
        assert_eq!(
            classify_stack(["std::sys::pal::unix::futex::futex_wait", "rayon_core::sleep::Sleep::sleep", "std::thread::start"]),
            Stage::Scheduler
        );
        assert_eq!(classify_stack(["__libc_malloc", "xtask::main"]), Stage::Other);
        assert_eq!(classify_stack(std::iter::empty()), Stage::Other);
    }
}
