//! `ggufembed serve`: the embedding server (OpenAI `/v1/embeddings`, TEI `/embed`, ...).
//!
//! Prints `listening on http://HOST:PORT` on standard output once the socket is bound (scripts
//! started with `--port 0` read the port from it); everything else goes to standard error.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::builder::TypedValueParser as _;
use embed_runtime::{Embedder, MAX_THREADS_PER_CORE};
use embed_server::{
    DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_CLIENT_BATCH, DEFAULT_MAX_CONCURRENT_INPUTS, DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_PAYLOAD_LIMIT, DEFAULT_QUEUE_TIMEOUT, DEFAULT_SERVED_MODEL_NAME,
    DEFAULT_SHUTDOWN_DEADLINE, Server, ServerError,
};

/// Serve embeddings over HTTP: OpenAI's POST /v1/embeddings and text-embeddings-inference's
/// POST /embed, /similarity, /tokenize, /decode, /, GET /info, /health, /metrics, with requests
/// batched together.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A GGUF model (default: EmbeddingGemma-300M Q8_0, fetched into the cache on first use).
    #[arg(long, short, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Address to listen on (0.0.0.0 to accept connections from other machines).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed on standard output).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Worker threads for the model (default: all cores; at most 4 per core).
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// Most tokens one forward pass takes from the queue.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_TOKENS, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    max_batch_tokens: usize,
    /// Most inputs queued or in flight; past it requests are answered 429 at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT_INPUTS, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    max_concurrent_inputs: usize,
    /// Most embedding or tokenizing requests in progress; past it requests are answered 429 at
    /// once, their bodies unread (with --payload-limit, this bounds the memory a flood of
    /// large requests can take).
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    max_concurrent_requests: usize,
    /// Most inputs in one request; more is a 422.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENT_BATCH, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    max_client_batch: usize,
    /// Largest request body in bytes; more is a 413.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_PAYLOAD_LIMIT, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    payload_limit: usize,
    /// Milliseconds a request may wait in the queue before any of its inputs starts; then it
    /// is answered 503 and never computed.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_QUEUE_TIMEOUT.as_millis() as u64)]
    queue_timeout: u64,
    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_SHUTDOWN_DEADLINE.as_secs())]
    shutdown_deadline: u64,
    /// Require `Authorization: Bearer KEY` on every route but the health probes (/health, /ping,
    /// GET /) (default: no key; the GGUFEMBED_API_KEY environment variable also sets it, keeping
    /// it out of `ps`).
    #[arg(long, value_name = "KEY", env = "GGUFEMBED_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The model name reported in /info and OpenAI responses.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_SERVED_MODEL_NAME)]
    served_model_name: String,
    /// Let web pages from ORIGIN (e.g. https://app.example) call the server: CORS headers on
    /// its requests, preflights answered without the API key. Repeat or separate with commas;
    /// `*` allows any origin. Default: none.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',')]
    cors_allow_origin: Vec<String>,
}

/// `--threads`: at least 1, at most [`MAX_THREADS_PER_CORE`] per available core.
fn parse_threads(s: &str) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cap = MAX_THREADS_PER_CORE * cores;
    match s.parse::<usize>() {
        Ok(0) => Err("at least 1 thread is needed".into()),
        Ok(n) if n <= cap => Ok(n),
        Ok(_) => Err(format!("at most {cap} ({MAX_THREADS_PER_CORE} per core on this machine's {cores})")),
        Err(_) => Err("expected a number of threads".into()),
    }
}

pub fn run(args: Args) -> Result<()> {
    // A missing --model file fails here, with its path; the default model is fetched here (with
    // progress bars) before the socket opens.
    let path = crate::model::resolve(args.model.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve-io")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, path))
}

async fn serve(args: Args, path: PathBuf) -> Result<()> {
    let threads = args.threads;
    let load_path = path.clone();
    let mut builder = Server::builder()
        .loader(move || {
            let mut b = Embedder::builder().model(load_path);
            if let Some(n) = threads {
                b = b.threads(n);
            }
            b.build()
        })
        .max_batch_tokens(args.max_batch_tokens)
        .max_concurrent_inputs(args.max_concurrent_inputs)
        .max_concurrent_requests(args.max_concurrent_requests)
        .max_client_batch(args.max_client_batch)
        .payload_limit(args.payload_limit)
        .queue_timeout(Duration::from_millis(args.queue_timeout))
        .shutdown_deadline(Duration::from_secs(args.shutdown_deadline))
        .served_model_name(args.served_model_name)
        // `a, b` as well as `a,b`.
        .cors_allow_origin(args.cors_allow_origin.iter().map(|o| o.trim().to_owned()));
    if let Some(key) = args.api_key {
        builder = builder.api_key(key);
    }
    let host = if args.host.contains(':') && !args.host.starts_with('[') {
        format!("[{}]", args.host)
    } else {
        args.host
    };
    // Signal handlers first: a SIGTERM right after the port is printed must stop gracefully.
    let signals = Signals::new()?;
    let server = builder.bind(&format!("{host}:{}", args.port)).await?;
    let addr = server.local_addr();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    eprintln!("loading {} ...", path.display());
    let started = Instant::now();
    let handle = server.shutdown_handle();
    tokio::spawn(async move {
        let mut signals = signals;
        signals.next().await;
        eprintln!("shutting down: finishing requests in flight (a second signal exits at once)");
        handle.shutdown();
        let status = signals.next().await;
        eprintln!("second signal: exiting now");
        std::process::exit(status);
    });
    if let Err(e) = server.wait_ready().await {
        let _ = server.shutdown().await;
        return Err(e.into());
    }
    eprintln!("model loaded in {:.1} s; serving", started.elapsed().as_secs_f64());
    match server.wait().await {
        Ok(()) => {
            eprintln!("stopped");
            Ok(())
        }
        Err(ServerError::DeadlineExceeded(d)) => {
            // Stopping was asked for and done; what was cut is reported, not failed.
            eprintln!("stopped: requests still running after the {d:?} shutdown deadline were cut");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// SIGTERM and SIGINT (Ctrl-C elsewhere).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next one; returns the status a process killed by it reports (128 + its
    /// number), which a second signal exits with.
    async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => 128 + 15,
            _ = self.int.recv() => 128 + 2,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            128 + 2
        }
    }
}
