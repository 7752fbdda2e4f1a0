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
use gemma_model::{ActivationPrecision, GemmaModel, LoadOptions, ModelScratch, NumericPath};
use gguf_format::GgufFile;
use parking_lot::Mutex;
use quant_kernels::{Isa, ParallelFor, Serial};

use crate::embeddings::Embeddings;
use crate::error::{EmbedError, TextError};
use crate::options::{Dims, EmbedOptions, Input, MATRYOSHKA_DIMS, Prepared, Truncation};
use crate::plan::{self, Parallelism};
use crate::pool::WorkerPool;
use crate::prompt::Prompt;
use crate::tuner::{Decision, Tuner};

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
    activations: ActivationPrecision,
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
            truncation: Truncation::Right,
            isa: None,
            numeric: NumericPath::Quantized,
            activations: ActivationPrecision::default(),
        }
    }
}

/// Tokens one forward pass may hold: one full-length text. Scratch memory is about 24 KB per
/// token, so this keeps each worker near 50 MB.
pub const DEFAULT_TOKEN_BUDGET: usize = 2048;

/// The largest token budget [`EmbedderBuilder::token_budget`] accepts: 16 full-length texts
/// per pass, about 0.8 GB of scratch per worker. Passes of more than a few hundred tokens are
/// no faster (the matmuls are compute-bound well before), while an absurd budget would ask for
/// its scratch up front and abort the process.
pub const MAX_TOKEN_BUDGET: usize = 16 * DEFAULT_TOKEN_BUDGET;

/// At most this many worker threads per available core. More threads than cores only add
/// memory (each worker holds ~50 MB of scratch) and contention; an absurd count would spawn
/// threads until the process is killed.
pub const MAX_THREADS_PER_CORE: usize = 4;

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

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

    /// Worker threads (default: the machine's available parallelism; at most
    /// [`MAX_THREADS_PER_CORE`] per available core).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// How calls spread over the workers (default [`Parallelism::Auto`]).
    pub fn parallelism(mut self, p: Parallelism) -> Self {
        self.parallelism = p;
        self
    }

    /// Most tokens one forward pass holds (default [`DEFAULT_TOKEN_BUDGET`], at most
    /// [`MAX_TOKEN_BUDGET`]); bounds the scratch memory of each worker. A single longer text
    /// still runs, growing the scratch once.
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

    /// What to do with texts longer than the context (default [`Truncation::Right`]).
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

    /// How the quantized path quantizes activations (default
    /// [`ActivationPrecision::Int8Outliers`]; `Int8` is llama.cpp's scheme, for comparisons).
    pub fn activations(mut self, precision: ActivationPrecision) -> Self {
        self.activations = precision;
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
        if self.token_budget > MAX_TOKEN_BUDGET {
            return Err(EmbedError::InvalidOption(format!(
                "token budget {} is more than {MAX_TOKEN_BUDGET}: each worker's scratch takes about 24 KB per token of it, and longer passes are no faster",
                self.token_budget
            )));
        }
        let cores = available_cores();
        match self.threads {
            Some(0) => {
                return Err(EmbedError::InvalidOption(
                    "threads must be at least 1".into(),
                ));
            }
            Some(n) if n > MAX_THREADS_PER_CORE * cores => {
                return Err(EmbedError::InvalidOption(format!(
                    "{n} threads is more than {MAX_THREADS_PER_CORE} per available core \
                     ({} on this machine's {cores})",
                    MAX_THREADS_PER_CORE * cores
                )));
            }
            _ => {}
        }
        // Options are checked before the model is mapped, so the message blames the option.
        let dims = Dims::new(self.dims.unwrap_or(MATRYOSHKA_DIMS[0]))?;
        let defaults = EmbedOptions::default()
            .with_prompt(self.prompt.clone())
            .with_dims(dims)
            .with_normalize(self.renormalize)
            .with_truncation(self.truncation);
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
        let options = LoadOptions {
            path: self.numeric,
            isa: self.isa,
            activations: self.activations,
        };
        // The pool comes first so the cold start uses it: the tokenizer is built on one worker
        // while the others repack the weight matrices (the two are most of a load).
        let threads = self.threads.unwrap_or(cores);
        let pool = WorkerPool::new(threads)?;
        let tokenizer_cache = crate::vocab::tokenizer_cache_dir();
        let (tokenizer, model) = pool.install(|fine| {
            rayon_core::join(
                || crate::vocab::tokenizer_from_gguf(&file, tokenizer_cache.as_deref()),
                || GemmaModel::load_with(Arc::clone(&file), options, fine as &dyn ParallelFor),
            )
        });
        let tokenizer = tokenizer.map_err(|reason| EmbedError::Tokenizer {
            path: path.to_owned(),
            reason,
        })?;
        let model = model.map_err(|source| EmbedError::Model {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let full = model.embedding_dim();
        if full != MATRYOSHKA_DIMS[0] {
            return Err(EmbedError::InvalidOption(format!(
                "the model's vectors have {full} values; this runtime serves EmbeddingGemma's {}",
                MATRYOSHKA_DIMS[0]
            )));
        }
        let context = model.config().context_length;
        let slots = (0..pool.threads()).map(|_| Mutex::new(None)).collect();
        Ok(Embedder {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                pool,
                path: path.to_owned(),
                defaults,
                parallelism: self.parallelism,
                tuner: Tuner::new(),
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
            .field("options", &self.inner.defaults)
            .finish_non_exhaustive()
    }
}

struct Inner {
    model: GemmaModel,
    tokenizer: Tokenizer,
    pool: WorkerPool,
    path: PathBuf,
    /// The builder's settings: the options of calls that give none.
    defaults: EmbedOptions,
    parallelism: Parallelism,
    /// What `Parallelism::Auto` has learned of this machine's speed in each mode.
    tuner: Tuner,
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
    /// Where each text's output starts in the call's output, plus the end.
    out_start: Vec<usize>,
    /// Whether each text's Matryoshka prefix is renormalised.
    renorm: Vec<bool>,
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

    /// Embeds `texts` with the builder's options, returning one vector per text in input
    /// order.
    ///
    /// An empty slice gives an empty result; an empty string is a valid text (`<bos><eos>`). A
    /// text's vector is bit-identical whatever batch it is in, whatever the thread count and
    /// parallelism mode.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Embeddings, EmbedError> {
        self.embed_with_options(texts, &self.inner.defaults, self.inner.parallelism)
    }

    /// [`Embedder::embed`] with this call's parallelism mode given explicitly.
    pub fn embed_with<S: AsRef<str>>(
        &self,
        texts: &[S],
        parallelism: Parallelism,
    ) -> Result<Embeddings, EmbedError> {
        self.embed_with_options(texts, &self.inner.defaults, parallelism)
    }

    /// Embeds `texts` with this call's options instead of the builder's.
    ///
    /// Any text that cannot be embedded fails the whole call with [`EmbedError::Text`] naming
    /// its position, before any work is done.
    pub fn embed_with_options<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
        parallelism: Parallelism,
    ) -> Result<Embeddings, EmbedError> {
        self.embed_with_options_until(texts, options, parallelism, &|| false)
    }

    /// [`Embedder::embed_with_options`] that every worker asks `stop` before each layer of each
    /// forward pass: once it says so, the call ends with [`EmbedError::Stopped`] within about a
    /// layer's time (1/24 of a pass) instead of the whole batch's, and the `Embedder` stays
    /// usable. For a caller whose user can interrupt (Python's Ctrl-C, which arrives while a
    /// long batch runs); a call that is not stopped returns exactly what `embed_with_options`
    /// does.
    pub fn embed_with_options_until<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
        parallelism: Parallelism,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Embeddings, EmbedError> {
        let inner = &*self.inner;
        let dims = options.dims().get();
        if texts.is_empty() {
            return Ok(Embeddings::new(dims, Vec::new(), Vec::new(), Vec::new()));
        }
        let mut bufs = inner.spare.lock().pop().unwrap_or_default();
        let result = inner
            .tokenize(texts, options, &mut bufs)
            .and_then(|()| inner.run(parallelism, &mut bufs, stop))
            .map(|out| {
                Embeddings::new(dims, out, bufs.tokens.clone(), bufs.truncated.clone())
            });
        inner.spare.lock().push(bufs);
        result
    }

    /// Tokenizes and checks one input under `options`, for [`Embedder::embed_prepared`].
    ///
    /// This is how a caller that gathers inputs from many sources (a server's requests) checks
    /// each where it arrives and then runs them together: texts with different prompts,
    /// dimensions, normalisation and truncation share one forward pass.
    pub fn prepare(&self, input: Input<'_>, options: &EmbedOptions) -> Result<Prepared, TextError> {
        let inner = &*self.inner;
        let mut ids = Vec::new();
        let mut bufs = inner.spare.lock().pop().unwrap_or_default();
        let tok = bufs.tok.get_or_insert_with(TokScratch::default);
        let untruncated = inner.tokenize_one(input, options, &mut bufs.input, &mut ids, tok);
        inner.spare.lock().push(bufs);
        let untruncated = untruncated?;
        Ok(Prepared {
            ids,
            untruncated,
            dims: options.dims(),
            normalize: options.normalize(),
        })
    }

    /// Embeds prepared inputs in one call (with the builder's parallelism), each with its own
    /// output dimension and normalisation; vector `i` belongs to `items[i]`. A vector is
    /// bit-identical to what [`Embedder::embed_with_options`] gives for the same input and
    /// options alone.
    pub fn embed_prepared(&self, items: &[&Prepared]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inner = &*self.inner;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut bufs = inner.spare.lock().pop().unwrap_or_default();
        bufs.clear_texts();
        for item in items {
            bufs.push_text(&item.ids, item.untruncated, item.dims.get(), item.normalize);
        }
        let result = inner.run(inner.parallelism, &mut bufs, &|| false).map(|out| {
            bufs.out_start
                .windows(2)
                .map(|w| out[w[0]..w[1]].to_vec())
                .collect()
        });
        inner.spare.lock().push(bufs);
        result
    }

    /// The options of calls that give none: the builder's prompt, dimension, normalisation and
    /// truncation.
    pub fn options(&self) -> &EmbedOptions {
        &self.inner.defaults
    }

    /// The mode [`Parallelism::Auto`] would run `texts` with now, exploration aside (for
    /// benchmarks and profiles; Auto learns from the calls it runs, so this can change).
    pub fn plan<S: AsRef<str>>(&self, texts: &[S]) -> Parallelism {
        let prefix = self.inner.defaults.prompt().prefix();
        let tokens: Vec<usize> = texts
            .iter()
            .map(|t| {
                let mut input = String::with_capacity(prefix.len() + t.as_ref().len());
                input.push_str(&prefix);
                input.push_str(t.as_ref());
                self.inner
                    .tokenizer
                    .count_ids(&input)
                    .min(self.inner.context)
            })
            .collect();
        self.inner.resolve(&tokens, Parallelism::Auto, false).0
    }

    /// The tokenizer built from the model file.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.inner.pool.threads()
    }

    /// Length of the vectors [`Embedder::embed`] returns (the builder's dimension).
    pub fn dim(&self) -> usize {
        self.inner.defaults.dims().get()
    }

    /// Rows of the model's token-embedding matrix: token ids must be below this.
    pub fn vocab_size(&self) -> usize {
        self.inner.model.config().vocab_size
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

    /// Bytes of weight matrices repacked for the kernels and held in memory: what one forward
    /// pass streams (the token embedding stays in the mapped file and is read a row per token).
    pub fn packed_weight_bytes(&self) -> usize {
        self.inner.model.packed_bytes()
    }
}

impl Inner {
    /// Runs the texts tokenized into `bufs` and returns their finished vectors, laid out by
    /// `bufs.out_start`.
    fn run(
        &self,
        parallelism: Parallelism,
        bufs: &mut CallBuffers,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<f32>, EmbedError> {
        let (mode, order, items, decision) = self.resolve(&bufs.tokens, parallelism, true);
        let mut out = vec![0.0f32; bufs.out_start.last().copied().unwrap_or(0)];

        let started = std::time::Instant::now();
        let run = catch_unwind(AssertUnwindSafe(|| match mode {
            Parallelism::Fine => self.run_fine(bufs, &order, &items, &mut out, stop),
            _ => self.run_coarse(bufs, &order, &items, &mut out, stop),
        }));
        if let Some(d) = decision {
            let ok = matches!(run, Ok(Ok(())));
            self.tuner.report(d, ok.then(|| started.elapsed().as_secs_f64()));
        }
        match run {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) => Err(e),
            Err(panic) => {
                // A worker's scratch may be half-written; drop them all so the next call starts
                // from fresh buffers.
                for slot in &self.slots {
                    *slot.lock() = None;
                }
                bufs.fine = None;
                Err(EmbedError::WorkerPanic(panic_message(&*panic)))
            }
        }
    }

    /// Tokenizes every text into `bufs`, prompt first, applying the truncation policy.
    fn tokenize<S: AsRef<str>>(
        &self,
        texts: &[S],
        options: &EmbedOptions,
        bufs: &mut CallBuffers,
    ) -> Result<(), EmbedError> {
        bufs.clear_texts();
        let mut one = std::mem::take(&mut bufs.one);
        let mut input = std::mem::take(&mut bufs.input);
        let mut tok = bufs.tok.take().unwrap_or_default();
        let mut result = Ok(());
        for (index, text) in texts.iter().enumerate() {
            match self.tokenize_one(Input::Text(text.as_ref()), options, &mut input, &mut one, &mut tok) {
                Ok(untruncated) => {
                    bufs.push_text(&one, untruncated, options.dims().get(), options.normalize())
                }
                Err(source) => {
                    result = Err(EmbedError::Text { index, source });
                    break;
                }
            }
        }
        bufs.one = one;
        bufs.input = input;
        bufs.tok = Some(tok);
        result
    }

    /// Writes the model ids of one input into `ids` and returns how many it had before
    /// truncation. `text` is reused storage for prompt + text.
    fn tokenize_one(
        &self,
        input: Input<'_>,
        options: &EmbedOptions,
        text: &mut String,
        ids: &mut Vec<u32>,
        scratch: &mut TokScratch,
    ) -> Result<usize, TextError> {
        let tokenizer = &self.tokenizer;
        let (bos, eos) = match input {
            Input::Text(t) => {
                text.clear();
                text.push_str(&options.prompt().prefix());
                text.push_str(t);
                tokenizer.encode_into_with(text, ids, scratch);
                (
                    usize::from(tokenizer.adds_bos() && tokenizer.bos_id().is_some()),
                    usize::from(tokenizer.adds_eos() && tokenizer.eos_id().is_some()),
                )
            }
            Input::Ids(given) => {
                if *options.prompt() != Prompt::None {
                    return Err(TextError::PromptWithIds);
                }
                ids.clear();
                let add_bos = tokenizer.bos_id().filter(|&b| given.first() != Some(&b));
                let add_eos = tokenizer.eos_id().filter(|&e| given.last() != Some(&e));
                ids.extend(add_bos);
                ids.extend_from_slice(given);
                ids.extend(add_eos);
                // Given or added, the frame is there now, and truncation keeps it.
                (
                    usize::from(tokenizer.bos_id().is_some()),
                    usize::from(tokenizer.eos_id().is_some()),
                )
            }
        };
        let untruncated = ids.len();
        if untruncated > self.context {
            let keep = self.context.saturating_sub(bos + eos);
            let content = bos..untruncated - eos;
            match options.truncation() {
                Truncation::Error => {
                    return Err(TextError::TooLong {
                        tokens: untruncated,
                        limit: self.context,
                    });
                }
                Truncation::Right => {
                    ids.drain(content.start + keep..content.end);
                }
                Truncation::Left => {
                    ids.drain(content.start..content.end - keep);
                }
            }
        }
        if ids.is_empty() {
            return Err(TextError::Empty);
        }
        let vocab = self.model.config().vocab_size;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            let piece = match input {
                Input::Text(_) => tokenizer.piece(id).map(str::to_owned),
                Input::Ids(_) => None,
            };
            return Err(TextError::IdOutOfVocab { id, vocab, piece });
        }
        Ok(untruncated)
    }

    /// The mode to run, the texts longest first, the work items over that order, and the
    /// tuner's decision to report back when Auto chose (`learn: true` lets Auto explore and
    /// expects the report).
    fn resolve(
        &self,
        tokens: &[usize],
        parallelism: Parallelism,
        learn: bool,
    ) -> (Parallelism, Vec<usize>, Vec<std::ops::Range<usize>>, Option<Decision>) {
        let workers = self.pool.threads();
        let order = plan::longest_first(tokens);
        let coarse = || plan::coarse_items(&order, tokens, self.token_budget, workers);
        let fine = || plan::fine_items(&order, tokens, self.token_budget);
        match parallelism {
            // On one worker both modes are the same code.
            Parallelism::Auto if workers > 1 => {
                let (coarse, fine) = (coarse(), fine());
                let (pc, pf) = plan::predict(tokens, &order, &coarse, &fine, workers);
                let d = self.tuner.decide(tokens, pc, pf, learn);
                let items = if d.mode == Parallelism::Fine { fine } else { coarse };
                (d.mode, order, items, learn.then_some(d))
            }
            Parallelism::Fine => {
                let items = fine();
                (Parallelism::Fine, order, items, None)
            }
            _ => {
                let items = coarse();
                (Parallelism::Coarse, order, items, None)
            }
        }
    }

    fn run_coarse(
        &self,
        bufs: &CallBuffers,
        order: &[usize],
        items: &[std::ops::Range<usize>],
        out: &mut [f32],
        stop: &(dyn Fn() -> bool + Sync),
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
                match self.model.embed_batch_until(&refs, &mut slot.scratch, &Serial, &mut slot.rows, stop) {
                    Ok(true) => {}
                    // Every worker asks `stop` itself, so the others give up too.
                    Ok(false) => {
                        failure.lock().get_or_insert(EmbedError::Stopped);
                        break;
                    }
                    Err(e) => {
                        *failure.lock() = Some(EmbedError::Input(e));
                        break;
                    }
                }
                let mut out = out.lock();
                for (row, &text) in slot.rows.chunks_exact(full).zip(texts) {
                    finish_row(bufs, text, row, &mut out);
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
        stop: &(dyn Fn() -> bool + Sync),
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
                let done = self
                    .model
                    .embed_batch_until(&refs, &mut scratch, fine as &dyn ParallelFor, &mut rows, stop)
                    .map_err(EmbedError::Input)?;
                if !done {
                    return Err(EmbedError::Stopped);
                }
                for (row, &text) in rows.chunks_exact(full).zip(&order[item.clone()]) {
                    finish_row(shared, text, row, out);
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

}

/// Copies text `text`'s unit-length model vector into the call's output, cutting its Matryoshka
/// prefix.
fn finish_row(bufs: &CallBuffers, text: usize, row: &[f32], out: &mut [f32]) {
    let dst = &mut out[bufs.out_start[text]..bufs.out_start[text + 1]];
    dst.copy_from_slice(&row[..dst.len()]);
    if bufs.renorm[text] && dst.len() < row.len() {
        gemma_model::l2_normalize(dst);
    }
}

impl CallBuffers {
    fn clear_texts(&mut self) {
        self.ids.clear();
        self.offsets.clear();
        self.offsets.push(0);
        self.tokens.clear();
        self.truncated.clear();
        self.out_start.clear();
        self.out_start.push(0);
        self.renorm.clear();
    }

    fn push_text(&mut self, ids: &[u32], untruncated: usize, dims: usize, renorm: bool) {
        self.ids.extend_from_slice(ids);
        self.offsets.push(self.ids.len());
        self.tokens.push(ids.len());
        self.truncated.push(untruncated > ids.len());
        let end = self.out_start.last().copied().unwrap_or(0) + dims;
        self.out_start.push(end);
        self.renorm.push(renorm);
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
