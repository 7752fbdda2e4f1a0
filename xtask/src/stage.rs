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
        .find(['<', '>', ' ', '(', '['])
        .unwrap_or(s.len());
    &s[..end]
}

/// The module path a source file belongs to: `crates/gemma-model/src/norm.rs` is
/// `gemma_model::norm`, a registry file `rayon-core-1.13.0/src/join/mod.rs` is
/// `rayon_core::join`, a standard-library file `library/alloc/src/raw_vec.rs` is
/// `alloc::raw_vec`. `None` for files of unknown origin.
///
/// Needed because `debug = "line-tables-only"` names inlined functions by their bare name
/// (`rms_norm_add`), while the file of every frame, inlined or not, is known.
pub fn module_of_file(file: &str) -> Option<String> {
    let f = normalize(&file.replace('\\', "/"));
    if let Some(i) = f.find("/library/") {
        let rest = &f[i + "/library/".len()..];
        if let Some(r) = rest.strip_prefix("stdarch/crates/core_arch/src/") {
            return Some(module_path("core_arch", r));
        }
        let (krate, after) = rest.split_once('/')?;
        return Some(module_path(krate, after.strip_prefix("src/")?));
    }
    if let Some(i) = f.find("/registry/src/") {
        let rest = &f[i + "/registry/src/".len()..];
        let (_index, rest) = rest.split_once('/')?;
        let (package, after) = rest.split_once('/')?;
        // `name-1.2.3` or `name-1.2.3-beta`: the version starts at the first `-digit`.
        let name = match package.match_indices('-').map(|(j, _)| j).find(|&j| package[j + 1..].starts_with(|c: char| c.is_ascii_digit())) {
            Some(j) => &package[..j],
            None => package,
        };
        return Some(module_path(&name.replace('-', "_"), after.strip_prefix("src/")?));
    }
    if let Some(i) = f.rfind("/crates/") {
        let (dir, after) = f[i + "/crates/".len()..].split_once('/')?;
        return Some(module_path(&dir.replace('-', "_"), after.strip_prefix("src/")?));
    }
    if let Some(i) = f.rfind("/xtask/src/") {
        return Some(module_path("xtask", &f[i + "/xtask/src/".len()..]));
    }
    None
}

/// Resolves `.` and `..` segments (standard-library paths point into stdarch through `../..`).
fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "." => {}
            ".." if out.last().is_some_and(|s| !s.is_empty() && *s != "..") => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    out.join("/")
}

fn module_path(krate: &str, rel: &str) -> String {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    if matches!(parts.last(), Some(&"lib") | Some(&"main") | Some(&"mod")) {
        parts.pop();
    }
    std::iter::once(krate).chain(parts).collect::<Vec<_>>().join("::")
}

/// A frame's name with its module path: kept as is when the symbol already carries a path,
/// else prefixed with the module of its source file.
pub fn qualified_name(name: &str, file: Option<&str>) -> String {
    let head = name.split('<').next().unwrap_or(name);
    if head.contains("::") || name.starts_with('<') {
        return name.to_string();
    }
    match file.and_then(module_of_file) {
        Some(module) => format!("{module}::{name}"),
        None => name.to_string(),
    }
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
/// Two refinements of "innermost project frame wins": thread-pool frames inside project code
/// (a worker spinning in `join` while another runs its half) are scheduler time; and attention
/// runs its score and value products on the kernels' f32 GEMM, so a kernel frame whose nearest
/// model caller is in `gemma_model::attention` is attention time, not matmul time.
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
            None if scheduler => return Stage::Scheduler,
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
    fn pool_frames_inside_project_code_are_scheduler_time() {
        let waiting = [
            "rayon_core::sleep::Sleep::sleep",
            "rayon_core::registry::WorkerThread::wait_until_cold",
            "rayon_core::join::join_context::{{closure}}",
            "embed_runtime::pool::split",
            "quant_kernels::gemm::run_int8",
            "gemma_model::linear::forward",
        ];
        assert_eq!(classify_stack(waiting), Stage::Scheduler);
        let stolen = ["quant_kernels::x86_64::avx512::int8_vnni", "quant_kernels::gemm::run_int8::{{closure}}", "embed_runtime::pool::split", "rayon_core::job::StackJob::execute"];
        assert_eq!(classify_stack(stolen), Stage::Matmul);
    }

    #[test]
    fn files_give_module_paths() {
        let cases = [
            ("/work/main/crates/gemma-model/src/norm.rs", Some("gemma_model::norm")),
            ("/work/main/crates/quant-kernels/src/gemm/act.rs", Some("quant_kernels::gemm::act")),
            ("/work/main/crates/quant-kernels/src/gemm/mod.rs", Some("quant_kernels::gemm")),
            ("/work/main/crates/embed-runtime/src/lib.rs", Some("embed_runtime")),
            ("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/rayon-core-1.13.0/src/join/mod.rs", Some("rayon_core::join")),
            ("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crossbeam-deque-0.8.6/src/deque.rs", Some("crossbeam_deque::deque")),
            ("/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src/raw_vec/mod.rs", Some("alloc::raw_vec")),
            ("/rustc/59807616e/library/stdarch/crates/core_arch/src/x86/avx512vnni.rs", Some("core_arch::x86::avx512vnni")),
            ("/work/main/xtask/src/profile.rs", Some("xtask::profile")),
            ("/rustc/5980/library/core/src/../../stdarch/crates/core_arch/src/x86/avx512f.rs", Some("core_arch::x86::avx512f")),
            ("/usr/src/glibc/memcpy.S", None),
        ];
        for (file, want) in cases {
            assert_eq!(module_of_file(file).as_deref(), want, "{file}");
        }
        assert_eq!(qualified_name("rms_norm_add", Some("/w/crates/gemma-model/src/norm.rs")), "gemma_model::norm::rms_norm_add");
        assert_eq!(qualified_name("std::thread::spawn", Some("/w/crates/gemma-model/src/norm.rs")), "std::thread::spawn");
        assert_eq!(qualified_name("memcpy", None), "memcpy");
        assert_eq!(
            qualified_name("for_each<core::ops::range::Range<usize>>", Some("/rustc/h/library/core/src/iter/traits/iterator.rs")),
            "core::iter::traits::iterator::for_each<core::ops::range::Range<usize>>"
        );
        assert_eq!(classify_symbol(&qualified_name("mean_rows", Some("/w/crates/gemma-model/src/pooling.rs"))), Some(Stage::Pooling));
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
