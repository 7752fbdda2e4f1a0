//! `ggufembed._native`: the Python extension module behind the `ggufembed` package.
//!
//! This crate only converts types. Python arguments become an [`EmbedOptions`] and a
//! [`Parallelism`]; the runtime's [`Embeddings`](embed_runtime::Embeddings) matrix becomes a
//! NumPy array that owns the runtime's `Vec<f32>` (no copy); [`EmbedError`]s become Python
//! exceptions. Prompts, truncation, Matryoshka dimensions and normalisation are the runtime's,
//! never re-implemented here. The sentence-transformers-style API (batching, progress, streaming,
//! warnings) is the pure-Python layer in `python/ggufembed/`, as tokenizers and pydantic-core
//! split theirs.
//!
//! Every call into the runtime runs with the GIL released ([`Python::detach`]) and inside
//! `catch_unwind`, so other Python threads run during a forward pass and no panic reaches the
//! interpreter: a panic becomes a `RuntimeError`. `embed` and `tokenize` run on a scoped thread
//! while the caller's thread looks for Ctrl-C ([`interruptible`]), so a long batch stops within a
//! layer of the model instead of running to its end.
#![deny(missing_docs)]
// PyO3's macros expand to `unsafe` FFI glue; this crate writes none itself.
#![deny(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use embed_runtime::{
    Dims, EmbedError, EmbedOptions, Embedder, Input, MATRYOSHKA_DIMS, NAMED_PROMPTS, Parallelism, Prompt, Truncation,
};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    ggufembed,
    ModelError,
    PyException,
    "The model file cannot be read, is not an EmbeddingGemma GGUF, or the default model cannot be fetched."
);
pyo3::create_exception!(
    ggufembed,
    TextError,
    PyValueError,
    "One input cannot be embedded (too long with truncate=False, a token the model has no \
     embedding for, or a lone surrogate); `index` is its position in the caller's input. The call \
     returns no vector, though a long input's batches before it may have been computed."
);

/// Maps a runtime error to the Python exception a caller expects: bad arguments are
/// `ValueError`, an input that cannot be embedded is `TextError` (a `ValueError` carrying
/// `index`), model problems are `ModelError`, anything else `RuntimeError`.
fn to_py(py: Python<'_>, e: EmbedError) -> PyErr {
    let message = e.to_string();
    match e {
        EmbedError::InvalidOption(_) => PyValueError::new_err(message),
        EmbedError::Text { index, .. } => {
            let err = TextError::new_err(message);
            // Setting an attribute on a fresh exception instance cannot fail in practice; if it
            // did, the message still names the index.
            let _ = err.value(py).setattr("index", index);
            err
        }
        EmbedError::ModelFile { .. } | EmbedError::Model { .. } | EmbedError::Tokenizer { .. } | EmbedError::Fetch(_) => {
            ModelError::new_err(message)
        }
        _ => PyRuntimeError::new_err(message),
    }
}

/// Runs `f` with the GIL released and any panic caught, mapping its error.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, EmbedError> + Send) -> PyResult<T> {
    finish(py, py.detach(move || catch_unwind(AssertUnwindSafe(f))))
}

/// How often a call waiting for the runtime looks for a pending signal.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// [`detached`] for work its user may interrupt. `f` runs on a scoped thread and is handed a
/// stop condition for the runtime; this thread, the caller's, waits for it and every
/// [`SIGNAL_POLL`] takes the GIL back for a moment to run pending signal handlers, which Python
/// runs only on its main thread and only with the GIL. When a handler raises (Ctrl-C's
/// `KeyboardInterrupt`), the runtime is told to stop, gives the threads back within a layer,
/// and that exception is raised. A call from another thread never sees a handler run (Python
/// leaves them to the main thread), so it simply waits, as `detached` does.
fn interruptible<T: Send>(
    py: Python<'_>,
    f: impl FnOnce(&(dyn Fn() -> bool + Sync)) -> Result<T, EmbedError> + Send,
) -> PyResult<T> {
    let stop = AtomicBool::new(false);
    let (result, raised) = py.detach(|| {
        std::thread::scope(|s| {
            let (done, finished) = channel::<()>();
            let stop = &stop;
            let worker = s.spawn(move || {
                // Dropped when the work ends, a panic included: that wakes the waiting thread.
                let _done = done;
                f(&|| stop.load(Ordering::Relaxed))
            });
            let mut raised = None;
            while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(SIGNAL_POLL) {
                if raised.is_none()
                    && let Err(e) = Python::attach(|py| py.check_signals())
                {
                    stop.store(true, Ordering::Relaxed);
                    raised = Some(e);
                }
            }
            // Joined, not just finished: a call leaves no thread behind, and a panic comes back
            // here as `Err` (the scope re-raises only those of threads nobody joined).
            (worker.join(), raised)
        })
    });
    // The handler's exception wins over the runtime's `Stopped` (and over a result that
    // finished in the same instant: the user asked to stop, and Python raises it either way).
    match raised {
        Some(e) => Err(e),
        None => finish(py, result),
    }
}

/// The Python outcome of a runtime call run under `catch_unwind`.
fn finish<T>(py: Python<'_>, result: std::thread::Result<Result<T, EmbedError>>) -> PyResult<T> {
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(PyRuntimeError::new_err(format!("internal error in ggufembed (caught panic): {what}")))
        }
    }
}

fn parse_parallelism(s: &str) -> PyResult<Parallelism> {
    match s {
        "auto" => Ok(Parallelism::Auto),
        "coarse" => Ok(Parallelism::Coarse),
        "fine" => Ok(Parallelism::Fine),
        _ => Err(PyValueError::new_err(format!("parallelism must be 'auto', 'coarse' or 'fine', not {s:?}"))),
    }
}

fn parallelism_name(p: Parallelism) -> &'static str {
    match p {
        Parallelism::Coarse => "coarse",
        Parallelism::Fine => "fine",
        _ => "auto",
    }
}

/// Builds the runtime's per-call options from Python's spelling of them.
fn options(
    prompt_name: Option<&str>,
    prompt: Option<String>,
    dims: Option<usize>,
    normalize: bool,
    truncation: &str,
) -> PyResult<EmbedOptions> {
    let prompt = match (prompt_name, prompt) {
        (Some(_), Some(_)) => return Err(PyValueError::new_err("give prompt_name or prompt, not both")),
        (Some(name), None) => Prompt::named(name).ok_or_else(|| {
            let names: Vec<&str> = NAMED_PROMPTS.iter().map(|(n, _)| *n).collect();
            PyValueError::new_err(format!("unknown prompt_name {name:?}; the model's prompts are {names:?}"))
        })?,
        (None, Some(text)) => Prompt::Custom(text),
        (None, None) => Prompt::None,
    };
    let truncation = match truncation {
        "right" => Truncation::Right,
        "left" => Truncation::Left,
        "error" => Truncation::Error,
        _ => {
            return Err(PyValueError::new_err(format!(
                "truncation must be 'right', 'left' or 'error', not {truncation:?}"
            )));
        }
    };
    let mut opts = EmbedOptions::default().with_prompt(prompt).with_normalize(normalize).with_truncation(truncation);
    if let Some(n) = dims {
        opts = opts.with_dims(Dims::new(n).map_err(|e| PyValueError::new_err(e.to_string()))?);
    }
    Ok(opts)
}

/// One loaded model with its worker threads (`embed_runtime::Embedder`).
#[pyclass(frozen, module = "ggufembed._native")]
struct NativeEmbedder {
    inner: Embedder,
    parallelism: Parallelism,
    /// The process that started the worker threads. A child made by `fork()` has none of them,
    /// so it must build its own embedder; using this one there would wait forever.
    pid: u32,
}

impl NativeEmbedder {
    fn check_process(&self) -> PyResult<()> {
        if std::process::id() == self.pid {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(
                "this Embedder was created in another process (before fork()); its worker threads do not \
                 exist here. Create a new Embedder in this process.",
            ))
        }
    }
}

#[pymethods]
impl NativeEmbedder {
    #[new]
    #[pyo3(signature = (model=None, *, threads=None, parallelism="auto"))]
    fn new(py: Python<'_>, model: Option<PathBuf>, threads: Option<usize>, parallelism: &str) -> PyResult<Self> {
        let parallelism = parse_parallelism(parallelism)?;
        let mut builder = Embedder::builder().parallelism(parallelism);
        if let Some(path) = model {
            builder = builder.model(path);
        }
        if let Some(n) = threads {
            builder = builder.threads(n);
        }
        let inner = detached(py, move || builder.build())?;
        Ok(NativeEmbedder { inner, parallelism, pid: std::process::id() })
    }

    /// Embeds `texts` in one runtime call; returns the (n, dims) float32 matrix, each text's
    /// token count and whether each was truncated.
    #[pyo3(signature = (texts, *, prompt_name=None, prompt=None, dims=None, normalize=false, truncation="right"))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        prompt_name: Option<&str>,
        prompt: Option<String>,
        dims: Option<usize>,
        normalize: bool,
        truncation: &str,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Vec<usize>, Vec<bool>)> {
        self.check_process()?;
        let opts = options(prompt_name, prompt, dims, normalize, truncation)?;
        let (inner, parallelism) = (&self.inner, self.parallelism);
        let out = interruptible(py, |stop| inner.embed_with_options_until(&texts, &opts, parallelism, stop))?;
        let (n, d) = (out.len(), out.dim());
        let tokens = out.token_counts().to_vec();
        let truncated = out.truncated().to_vec();
        // NumPy takes ownership of the runtime's buffer; reshape makes a view, not a copy.
        let matrix = PyArray1::from_vec(py, out.into_vec()).reshape([n, d])?;
        Ok((matrix, tokens, truncated))
    }

    /// The token ids each text would go into the model as (`<bos>`, prompt, text, `<eos>`,
    /// after truncation).
    #[pyo3(signature = (texts, *, prompt_name=None, prompt=None, truncation="right"))]
    fn tokenize(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        prompt_name: Option<&str>,
        prompt: Option<String>,
        truncation: &str,
    ) -> PyResult<Vec<Vec<u32>>> {
        self.check_process()?;
        let opts = options(prompt_name, prompt, None, false, truncation)?;
        let inner = &self.inner;
        interruptible(py, |stop| {
            texts
                .iter()
                .enumerate()
                .map(|(index, t)| {
                    if stop() {
                        return Err(EmbedError::Stopped);
                    }
                    inner
                        .prepare(Input::Text(t), &opts)
                        .map(|p| p.ids().to_vec())
                        .map_err(|source| EmbedError::Text { index, source })
                })
                .collect()
        })
    }

    /// Length of the full vectors (768).
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// The model's context length in tokens.
    #[getter]
    fn context_length(&self) -> usize {
        self.inner.context_length()
    }

    /// Worker threads of this embedder's pool.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// `auto`, `coarse` or `fine`.
    #[getter]
    fn parallelism(&self) -> &'static str {
        parallelism_name(self.parallelism)
    }

    /// Rows of the token-embedding matrix.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    /// The GGUF file.
    #[getter]
    fn model_path(&self) -> PathBuf {
        self.inner.model_path().to_owned()
    }

    /// The kernel instruction set the matmuls run on.
    #[getter]
    fn isa(&self) -> String {
        format!("{:?}", self.inner.isa())
    }
}

/// Path of the default model (EmbeddingGemma-300M Q8_0), fetching and converting it first if
/// the cache lacks it.
#[pyfunction]
fn default_model_path(py: Python<'_>) -> PyResult<PathBuf> {
    detached(py, embed_runtime::default_model_path)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // rust-numpy looks NumPy's C API up on first use, which runs Python code. Left to the first
    // `embed`, that is right after the GIL comes back from a long computation, where a pending
    // Ctrl-C raises inside the lookup and rust-numpy turns it into a panic (a PanicException,
    // not KeyboardInterrupt). Importing NumPy here makes a missing NumPy an ImportError, and
    // the first array does the lookup at import time.
    py.import("numpy")?;
    drop(PyArray1::<f32>::zeros(py, [0], false));
    m.add_class::<NativeEmbedder>()?;
    m.add_function(wrap_pyfunction!(default_model_path, m)?)?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("TextError", py.get_type::<TextError>())?;
    m.add("NAMED_PROMPTS", NAMED_PROMPTS.to_vec())?;
    m.add("MATRYOSHKA_DIMS", MATRYOSHKA_DIMS.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
