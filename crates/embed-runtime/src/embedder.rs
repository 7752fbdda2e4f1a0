//! [`Embedder`]: texts in, vectors out.
//!
//! One call goes: tokenize every text (prompt prepended) on the calling thread into one flat id
//! buffer → plan work items (longest texts first) → run them on the pool, coarse (items on
//! different workers, serial matmuls) or fine (one item at a time, matmuls split) → scatter each
//! item's rows back to input order → cut Matryoshka prefixes. Every buffer on that path is
//! pooled and reused, so after the first call of a given shape only the returned matrix is
//! allocated.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bpe_tokenizer::{Scratch as TokScratch, Tokenizer};
use gemma_model::{GemmaModel, LoadOptions, ModelScratch, NumericPath};
use gguf_format::GgufFile;
use parking_lot::Mutex;
use quant_kernels::{Isa, ParallelFor, Serial};

use crate::embeddings::Embeddings;
use crate::error::EmbedError;
use crate::plan::{self, Parallelism};
use crate::pool::WorkerPool;
use crate::prompt::Prompt;

/// What to do with a text longer than the model's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Keep `<bos>`, the first `context − 2` content ids and `<eos>` (what sentence-transformers
    /// does), and report it in [`Embeddings::truncated`].
    #[default]
    Truncate,
    /// Fail the call with [`EmbedError::TooLong`].
    Error,
}

/// Configures and builds an [`Embedder`].
#[derive(Debug, Clone)]
pub struct EmbedderBuilder {
    model: Option<PathBuf>,
    threads: Option<usize>,
    parallelism: Parallelism,
    token_budget: usize,
    prompt: Prompt,
    dims: Option<usize>,
    renormalize: bool,
    truncation: Truncation,
    isa: Option<Isa>,
    numeric: NumericPath,
}

impl Default for EmbedderBuilder {
    fn default() -> Self {
        EmbedderBuilder {
            model: None,
            threads: None,
            parallelism: Parallelism::Auto,
            token_budget: DEFAULT_TOKEN_BUDGET,
            prompt: Prompt::None,
            dims: None,
            renormalize: false,
            truncation: Truncation::Truncate,
            isa: None,
            numeric: NumericPath::Quantized,
        }
    }
}

/// Tokens one forward pass may hold: one full-length text. Scratch memory is about 24 KB per
/// token, so this keeps each worker near 50 MB.
pub const DEFAULT_TOKEN_BUDGET: usize = 2048;

/// The Matryoshka dimensions EmbeddingGemma was trained to support (768 being the full vector).
pub const MATRYOSHKA_DIMS: [usize; 4] = [768, 512, 256, 128];

impl EmbedderBuilder {
    /// A builder with the defaults: the default model (fetched on first use), all available
    /// cores, automatic parallelism, no prompt, 768 dimensions, truncation at the context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A GGUF file of architecture `gemma-embedding`. Without it, [`EmbedderBuilder::build`]
    /// fetches and converts the default model (EmbeddingGemma-300M, Q8_0) into the cache.
    pub fn model(mut self, path: impl Into<PathBuf>) -> Self {
        self.model = Some(path.into());
        self
    }

    /// Worker threads (default: the machine's available parallelism).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// How calls spread over the workers (default [`Parallelism::Auto`]).
    pub fn parallelism(mut self, p: Parallelism) -> Self {
        self.parallelism = p;
        self
    }

    /// Most tokens one forward pass holds (default [`DEFAULT_TOKEN_BUDGET`]); bounds the scratch
    /// memory of each worker. A single longer text still runs, growing the scratch once.
    pub fn token_budget(mut self, tokens: usize) -> Self {
        self.token_budget = tokens;
        self
    }

    /// The prompt prepended to every text (default none).
    pub fn prompt(mut self, prompt: Prompt) -> Self {
        self.prompt = prompt;
        self
    }

    /// Output dimension: 768 (default), or a Matryoshka prefix of 512, 256 or 128.
    pub fn dims(mut self, dims: usize) -> Self {
        self.dims = Some(dims);
        self
    }

    /// Whether a Matryoshka prefix is scaled back to unit length (default false, like
    /// sentence-transformers' `truncate_dim`).
    pub fn renormalize(mut self, yes: bool) -> Self {
        self.renormalize = yes;
        self
    }

    /// What to do with texts longer than the context (default [`Truncation::Truncate`]).
    pub fn truncation(mut self, t: Truncation) -> Self {
        self.truncation = t;
        self
    }

    /// Forces a kernel instruction set (for testing and benchmarking); it must be supported by
    /// this CPU.
    pub fn isa(mut self, isa: Isa) -> Self {
        self.isa = Some(isa);
        self
    }

    /// The matmul arithmetic (default [`NumericPath::Quantized`]; `F32` is the accuracy
    /// reference and holds every matrix as f32).
    pub fn numeric(mut self, path: NumericPath) -> Self {
        self.numeric = path;
        self
    }

    /// Loads the model and tokenizer and starts the worker threads.
    pub fn build(self) -> Result<Embedder, EmbedError> {
        let path = match self.model.clone() {
            Some(p) => p,
            None => crate::default_model::default_model_path()?,
        };
        self.build_from(&path)
    }

    fn build_from(self, path: &Path) -> Result<Embedder, EmbedError> {
        if self.token_budget == 0 {
            return Err(EmbedError::InvalidOption(
                "token budget must be at least 1".into(),
            ));
        }
        if self.threads == Some(0) {
            return Err(EmbedError::InvalidOption(
                "threads must be at least 1".into(),
            ));
        }
        if let Some(isa) = self.isa
            && quant_kernels::Kernels::for_isa(isa).is_none()
        {
            return Err(EmbedError::InvalidOption(format!(
                "instruction set {isa:?} is not supported by this CPU"
            )));
        }
        let file = GgufFile::open(path).map_err(|source| EmbedError::ModelFile {
            path: path.to_owned(),
            source,
        })?;
        let file = Arc::new(file);
        let tokenizer =
            crate::vocab::tokenizer_from_gguf(&file).map_err(|reason| EmbedError::Tokenizer {
                path: path.to_owned(),
                reason,
            })?;
        let options = LoadOptions {
            path: self.numeric,
            isa: self.isa,
        };
        let model =
            GemmaModel::load(Arc::clone(&file), options).map_err(|source| EmbedError::Model {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        let full = model.embedding_dim();
        let dims = self.dims.unwrap_or(full);
        if dims == 0 || dims > full || (full == 768 && !MATRYOSHKA_DIMS.contains(&dims)) {
            return Err(EmbedError::InvalidOption(format!(
                "dimension {dims} is not one of the model's Matryoshka sizes {MATRYOSHKA_DIMS:?}"
            )));
        }
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool = WorkerPool::new(threads)?;
        let context = model.config().context_length;
        let slots = (0..pool.threads()).map(|_| Mutex::new(None)).collect();
        Ok(Embedder {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                pool,
                path: path.to_owned(),
                prefix: self.prompt.prefix().into_owned(),
                prompt: self.prompt,
                dims,
                renormalize: self.renormalize,
                truncation: self.truncation,
                parallelism: self.parallelism,
                token_budget: self.token_budget,
                context,
                isa: self
                    .isa
                    .unwrap_or_else(|| quant_kernels::Kernels::get().isa()),
                slots,
                spare: Mutex::new(Vec::new()),
                #[cfg(test)]
                inject_panic: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

/// Embeds texts with EmbeddingGemma. Cheap to clone and share: clones use the same model,
/// tokenizer and worker threads, and any number of threads may call [`Embedder::embed`] at once.
///
/// ```no_run
/// use embed_runtime::{Embedder, Prompt};
/// # fn main() -> Result<(), embed_runtime::EmbedError> {
/// let embedder = Embedder::builder()
///     .model("embeddinggemma-300m-q8_0.gguf")
///     .prompt(Prompt::named("query").expect("a model prompt"))
///     .build()?;
/// let out = embedder.embed(&["What is the capital of France?", "Paris"])?;
/// let cosine: f32 = out.row(0).iter().zip(out.row(1)).map(|(a, b)| a * b).sum();
/// assert!(cosine > 0.0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Embedder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.inner.path)
            .field("threads", &self.inner.pool.threads())
            .field("parallelism", &self.inner.parallelism)
            .field("prompt", &self.inner.prompt)
            .field("dims", &self.inner.dims)
            .finish_non_exhaustive()
    }
}

struct Inner {
    model: GemmaModel,
    tokenizer: Tokenizer,
    pool: WorkerPool,
    path: PathBuf,
    prompt: Prompt,
    prefix: String,
    dims: usize,
    renormalize: bool,
    truncation: Truncation,
    parallelism: Parallelism,
    token_budget: usize,
    context: usize,
    isa: Isa,
    /// One per pool worker, used by coarse mode; `None` until that worker first runs.
    slots: Vec<Mutex<Option<WorkerSlot>>>,
    /// Per-call buffers of finished calls, reused by the next ones.
    spare: Mutex<Vec<CallBuffers>>,
    /// Makes the next work item panic inside a worker (tests of panic recovery).
    #[cfg(test)]
    inject_panic: std::sync::atomic::AtomicBool,
}

/// What a worker keeps between coarse-mode calls.
struct WorkerSlot {
    scratch: ModelScratch,
    /// The vectors of the work item in hand, `texts × full_dim`.
    rows: Vec<f32>,
    /// Reused storage for the `&[u32]` list handed to the model (see [`recycle`]).
    refs: Vec<&'static [u32]>,
}

/// The buffers one call needs besides the workers' own.
#[derive(Default)]
struct CallBuffers {
    /// Prompt + text of the text being tokenized.
    input: String,
    /// Every text's ids, one after another.
    ids: Vec<u32>,
    /// Start of each text's ids in `ids`, plus the end.
    offsets: Vec<usize>,
    tokens: Vec<usize>,
    truncated: Vec<bool>,
    one: Vec<u32>,
    tok: Option<TokScratch>,
    /// Fine mode's scratch (fine mode runs one work item at a time on the calling side).
    fine: Option<ModelScratch>,
    rows: Vec<f32>,
    refs: Vec<&'static [u32]>,
}

impl Embedder {
    /// A builder with the defaults (see [`EmbedderBuilder::new`]).
    pub fn builder() -> EmbedderBuilder {
        EmbedderBuilder::new()
    }

    /// Embeds `texts`, returning one vector per text in input order.
    ///
    /// An empty slice gives an empty result; an empty string is a valid text (`<bos><eos>`). A
    /// text's vector is bit-identical whatever batch it is in, whatever the thread count and
    /// parallelism mode.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Embeddings, EmbedError> {
        self.embed_with(texts, self.inner.parallelism)
    }

    /// [`Embedder::embed`] with this call's parallelism mode given explicitly.
    pub fn embed_with<S: AsRef<str>>(
        &self,
        texts: &[S],
        parallelism: Parallelism,
    ) -> Result<Embeddings, EmbedError> {
        let inner = &*self.inner;
        if texts.is_empty() {
            return Ok(Embeddings::new(
                inner.dims,
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ));
        }
        let mut bufs = inner.spare.lock().pop().unwrap_or_default();
        let result = inner.embed_into(texts, parallelism, &mut bufs);
        inner.spare.lock().push(bufs);
        result
    }

    /// The mode [`Parallelism::Auto`] would run `texts` with (for benchmarks and profiles).
    pub fn plan<S: AsRef<str>>(&self, texts: &[S]) -> Parallelism {
        let tokens: Vec<usize> = texts
            .iter()
            .map(|t| {
                let mut input = String::with_capacity(self.inner.prefix.len() + t.as_ref().len());
                input.push_str(&self.inner.prefix);
                input.push_str(t.as_ref());
                self.inner
                    .tokenizer
                    .count_ids(&input)
                    .min(self.inner.context)
            })
            .collect();
        self.inner.resolve(&tokens, Parallelism::Auto).0
    }

    /// The tokenizer built from the model file.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.inner.pool.threads()
    }

    /// Length of the returned vectors.
    pub fn dim(&self) -> usize {
        self.inner.dims
    }

    /// The model's context length in tokens.
    pub fn context_length(&self) -> usize {
        self.inner.context
    }

    /// The model file.
    pub fn model_path(&self) -> &Path {
        &self.inner.path
    }

    /// The kernel instruction set the model's matmuls run on.
    pub fn isa(&self) -> Isa {
        self.inner.isa
    }
}

impl Inner {
    fn embed_into<S: AsRef<str>>(
        &self,
        texts: &[S],
        parallelism: Parallelism,
        bufs: &mut CallBuffers,
    ) -> Result<Embeddings, EmbedError> {
        self.tokenize(texts, bufs)?;
        let (mode, order, items) = self.resolve(&bufs.tokens, parallelism);
        let n = texts.len();
        let mut out = vec![0.0f32; n * self.dims];

        let run = catch_unwind(AssertUnwindSafe(|| match mode {
            Parallelism::Fine => self.run_fine(bufs, &order, &items, &mut out),
            _ => self.run_coarse(bufs, &order, &items, &mut out),
        }));
        match run {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                // A worker's scratch may be half-written; drop them all so the next call starts
                // from fresh buffers.
                for slot in &self.slots {
                    *slot.lock() = None;
                }
                bufs.fine = None;
                return Err(EmbedError::WorkerPanic(panic_message(&*panic)));
            }
        }
        Ok(Embeddings::new(
            self.dims,
            out,
            bufs.tokens.clone(),
            bufs.truncated.clone(),
        ))
    }

    /// Tokenizes every text into `bufs.ids`, prompt first, applying the truncation policy.
    fn tokenize<S: AsRef<str>>(
        &self,
        texts: &[S],
        bufs: &mut CallBuffers,
    ) -> Result<(), EmbedError> {
        bufs.ids.clear();
        bufs.offsets.clear();
        bufs.tokens.clear();
        bufs.truncated.clear();
        bufs.offsets.push(0);
        let tok = bufs.tok.get_or_insert_with(TokScratch::default);
        for (index, text) in texts.iter().enumerate() {
            bufs.input.clear();
            bufs.input.push_str(&self.prefix);
            bufs.input.push_str(text.as_ref());
            let enc = self
                .tokenizer
                .encode_truncated_into_with(&bufs.input, self.context, &mut bufs.one, tok)
                .map_err(|e| EmbedError::InvalidOption(e.to_string()))?;
            if enc.truncated() && self.truncation == Truncation::Error {
                return Err(EmbedError::TooLong {
                    index,
                    tokens: enc.n_ids_untruncated,
                    limit: self.context,
                });
            }
            if bufs.one.is_empty() {
                // Only possible for a file whose tokenizer adds neither <bos> nor <eos>.
                return Err(EmbedError::EmptyInput { index });
            }
            bufs.ids.extend_from_slice(&bufs.one);
            bufs.offsets.push(bufs.ids.len());
            bufs.tokens.push(enc.n_ids);
            bufs.truncated.push(enc.truncated());
        }
        Ok(())
    }

    /// The mode to run, the texts longest first, and the work items over that order.
    fn resolve(
        &self,
        tokens: &[usize],
        parallelism: Parallelism,
    ) -> (Parallelism, Vec<usize>, Vec<std::ops::Range<usize>>) {
        let workers = self.pool.threads();
        let order = plan::longest_first(tokens);
        let coarse = || plan::coarse_items(&order, tokens, self.token_budget, workers);
        let fine = || plan::fine_items(&order, tokens, self.token_budget);
        let (mode, items) = match parallelism {
            Parallelism::Auto => {
                let (coarse, fine) = (coarse(), fine());
                match plan::choose_mode(tokens, &order, &coarse, &fine, workers) {
                    Parallelism::Fine => (Parallelism::Fine, fine),
                    m => (m, coarse),
                }
            }
            Parallelism::Fine => (Parallelism::Fine, fine()),
            m => (m, coarse()),
        };
        (mode, order, items)
    }

    fn run_coarse(
        &self,
        bufs: &CallBuffers,
        order: &[usize],
        items: &[std::ops::Range<usize>],
        out: &mut [f32],
    ) -> Result<(), EmbedError> {
        let full = self.model.embedding_dim();
        let next = AtomicUsize::new(0);
        let failure = Mutex::new(None);
        // Rows go straight into this call's output: per-worker state must not outlive the
        // call, since another call's broadcast may reach the same worker right after.
        let out = Mutex::new(out);
        // Which worker takes which item depends on timing, so every worker sizes its buffers
        // for the largest item up front: otherwise a worker meeting a larger item than it ever
        // saw would allocate in a steady state that is otherwise allocation-free.
        let max_texts = items.iter().map(|r| r.len()).max().unwrap_or(0);
        self.pool.broadcast(|worker| {
            let mut guard = self.slots[worker].lock();
            let slot = guard.get_or_insert_with(|| WorkerSlot {
                scratch: ModelScratch::new(&self.model, self.token_budget),
                rows: Vec::new(),
                refs: Vec::new(),
            });
            let mut refs = recycle(std::mem::take(&mut slot.refs));
            refs.reserve(max_texts);
            slot.rows.clear();
            slot.rows.reserve(max_texts * full);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let texts = &order[item.clone()];
                #[cfg(test)]
                self.maybe_panic();
                refs.clear();
                refs.extend(texts.iter().map(|&t| text_ids(bufs, t)));
                slot.rows.clear();
                slot.rows.resize(refs.len() * full, 0.0);
                if let Err(e) =
                    self.model
                        .embed_batch(&refs, &mut slot.scratch, &Serial, &mut slot.rows)
                {
                    *failure.lock() = Some(EmbedError::Input(e));
                    break;
                }
                let mut out = out.lock();
                for (row, &text) in slot.rows.chunks_exact(full).zip(texts) {
                    self.finish_row(row, &mut out[text * self.dims..(text + 1) * self.dims]);
                }
            }
            slot.refs = recycle(refs);
        });
        match failure.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn run_fine(
        &self,
        bufs: &mut CallBuffers,
        order: &[usize],
        items: &[std::ops::Range<usize>],
        out: &mut [f32],
    ) -> Result<(), EmbedError> {
        let full = self.model.embedding_dim();
        let mut scratch = bufs
            .fine
            .take()
            .unwrap_or_else(|| ModelScratch::new(&self.model, self.token_budget));
        let mut rows = std::mem::take(&mut bufs.rows);
        let mut refs = recycle(std::mem::take(&mut bufs.refs));
        let shared: &CallBuffers = bufs;
        let result = self.pool.install(|fine| -> Result<(), EmbedError> {
            for item in items {
                #[cfg(test)]
                self.maybe_panic();
                refs.clear();
                refs.extend(order[item.clone()].iter().map(|&t| text_ids(shared, t)));
                rows.clear();
                rows.resize(refs.len() * full, 0.0);
                self.model
                    .embed_batch(&refs, &mut scratch, fine as &dyn ParallelFor, &mut rows)
                    .map_err(EmbedError::Input)?;
                for (row, &text) in rows.chunks_exact(full).zip(&order[item.clone()]) {
                    self.finish_row(row, &mut out[text * self.dims..(text + 1) * self.dims]);
                }
            }
            Ok(())
        });
        bufs.refs = recycle(refs);
        bufs.rows = rows;
        bufs.fine = Some(scratch);
        result
    }

    #[cfg(test)]
    fn maybe_panic(&self) {
        if self.inject_panic.swap(false, Ordering::SeqCst) {
            panic!("injected worker panic");
        }
    }

    /// Copies a unit-length model vector into the output, cutting the Matryoshka prefix.
    fn finish_row(&self, row: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(&row[..self.dims]);
        if self.renormalize && self.dims < row.len() {
            gemma_model::l2_normalize(dst);
        }
    }
}

fn text_ids(bufs: &CallBuffers, text: usize) -> &[u32] {
    &bufs.ids[bufs.offsets[text]..bufs.offsets[text + 1]]
}

/// Reuses a vector's allocation for references of another lifetime. The vector is emptied
/// first, so no reference survives; collecting an empty `IntoIter` through `map` into an element
/// type of the same size reuses the buffer (std's in-place collection), which keeps the
/// per-item list of text slices allocation-free.
fn recycle<'a, 'b>(mut v: Vec<&'a [u32]>) -> Vec<&'b [u32]> {
    v.clear();
    v.into_iter().map(|_| -> &'b [u32] { &[] }).collect()
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_panic_fails_that_call_only() {
        let model = model_fetch::testing::gguf(model_fetch::OutType::Q8_0);
        let e = Embedder::builder().model(model).threads(2).build().unwrap();
        let texts = [
            "a man is playing a flute",
            "a woman is slicing an onion",
            "dogs run",
        ];
        let want = e.embed(&texts).unwrap();
        for mode in [Parallelism::Coarse, Parallelism::Fine] {
            e.inner.inject_panic.store(true, Ordering::SeqCst);
            let err = e.embed_with(&texts, mode).unwrap_err();
            assert!(
                matches!(err, EmbedError::WorkerPanic(ref m) if m.contains("injected")),
                "{err}"
            );
            // Same results as before the panic, in either mode.
            assert_eq!(
                e.embed_with(&texts, mode).unwrap(),
                want,
                "{mode:?} after a panic"
            );
        }
    }
}
