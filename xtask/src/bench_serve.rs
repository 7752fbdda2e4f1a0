//! `cargo xtask bench-serve`: `ggufembed serve` under closed-loop load, beside the library's own
//! rate at the same batch size on the same texts and, optionally, llama.cpp's `llama-server`.
//!
//! Each run is N clients, each sending a request of K texts from the STS-B pool, waiting for the
//! answer and sending the next. Both servers run as separate processes with the same model and
//! thread count, driven over loopback HTTP/1.1 keep-alive by the same client (reqwest on a
//! two-thread tokio runtime). The load generator shares the machine with the server, as it does
//! for the peer, so the comparison is fair but the absolute figures include the client's CPU.
//!
//! A run's time is cut into `--slices` rounds, and each round gives the same time to the
//! library (in this process, batches of N·K texts, the work one full pass of the server
//! does), then our server, then the peer: the machine's speed drifts by 20 % and more within
//! minutes on a shared VM, and a baseline measured minutes apart would compare the drift, not
//! the server (see `bench-matrix`, which round-robins its columns for the same reason).
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use embed_runtime::{Embedder, Parallelism};
use plotters::prelude::*;

use crate::machine::{Machine, ModelInfo};
use crate::render::{Table, csv_record, pct, sig3};
use crate::stats::percentile;
use crate::workload::{load_sentences, window_from};

/// Options of `cargo xtask bench-serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Runs as CLIENTSxTEXTS (concurrent clients × texts per request), in order.
    #[arg(long, default_value = "1x1,8x1,32x1,128x1,8x16")]
    pub runs: String,
    /// Measured seconds per run and target (library, our server, the peer).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Rounds a run's measured time is cut into; each round measures every target in turn.
    #[arg(long, default_value_t = 5)]
    pub slices: usize,
    /// Seconds of load before each slice's measurement starts (connections open, the batcher
    /// reaches its steady pass size).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Hold an exclusive lock on this file while measuring (see `bench-matrix --lock`).
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Model threads (library, our server and the peer alike; default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The ggufembed binary (default: target/release/ggufembed, built first if missing).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Extra arguments for `ggufembed serve` (e.g. "--max-batch-tokens 1024").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub serve_args: String,
    /// Also run the same load against llama.cpp's `llama-server --embeddings` at PATH (build it
    /// with `bash ../shared/tools/llama-peer/build.sh DIR`; the binary is DIR/build/bin/llama-server).
    #[arg(long, value_name = "PATH")]
    pub peer_llama_server: Option<PathBuf>,
    /// llama-server's parallel slots (`-np`); its other settings are its EmbeddingGemma preset's.
    #[arg(long, default_value_t = 32)]
    pub peer_slots: usize,
    #[command(flatten)]
    pub inputs: crate::workload::Inputs,
}

/// One load run's outcome.
#[derive(Debug, Clone)]
struct RunResult {
    server: String,
    clients: usize,
    per_request: usize,
    seconds: f64,
    ok_requests: usize,
    ok_texts: usize,
    latencies_ms: Vec<f64>,
    rejected: usize,
    errors: usize,
    /// Inputs, forward passes and seconds spent in them during the run's slices (warm-up
    /// included), from the server's `te_batch_next_size` sum and count and
    /// `te_batch_inference_duration` sum, and the slices' wall seconds (servers without the
    /// metrics: `None`). Tells a server whose passes are slow from one that idles between them.
    passes: Option<(f64, f64, f64, f64)>,
}

impl RunResult {
    fn texts_per_s(&self) -> f64 {
        self.ok_texts as f64 / self.seconds
    }

    fn p(&self, q: f64) -> f64 {
        percentile(&self.latencies_ms, q).unwrap_or(f64::NAN)
    }

    fn mean_pass(&self) -> Option<f64> {
        self.passes.filter(|p| p.1 > 0.0).map(|(inputs, passes, _, _)| inputs / passes)
    }

    fn ms_per_pass(&self) -> Option<f64> {
        self.passes.filter(|p| p.1 > 0.0).map(|(_, passes, secs, _)| 1e3 * secs / passes)
    }

    /// Share of the measured time the server spent in forward passes.
    fn busy(&self) -> Option<f64> {
        self.passes.filter(|p| p.3 > 0.0).map(|(_, _, secs, wall)| secs / wall)
    }

    /// Two slices of the same run as one.
    fn merge(mut self, other: RunResult) -> RunResult {
        self.seconds += other.seconds;
        self.ok_requests += other.ok_requests;
        self.ok_texts += other.ok_texts;
        self.latencies_ms.extend(other.latencies_ms);
        self.rejected += other.rejected;
        self.errors += other.errors;
        self.passes = match (self.passes, other.passes) {
            (Some(a), Some(b)) => Some((a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3)),
            _ => None,
        };
        self
    }
}

/// The library's own rate for one run, measured in the same rounds: batches of the run's
/// `clients × texts` (what one full pass of the server computes).
#[derive(Debug, Clone)]
struct Baseline {
    mode: Parallelism,
    clients: usize,
    per_request: usize,
    batch: usize,
    texts: usize,
    seconds: f64,
    calls_ms: Vec<f64>,
}

impl Baseline {
    fn texts_per_s(&self) -> f64 {
        self.texts as f64 / self.seconds
    }

    fn p50_ms(&self) -> f64 {
        percentile(&self.calls_ms, 50.0).unwrap_or(f64::NAN)
    }
}

/// The library modes measured for every run. The baseline a server is held to is the best of
/// them, not Auto alone: Auto learns online, and a run that catches it exploring or still
/// settling would flatter the server.
const LIBRARY_MODES: [Parallelism; 3] = [Parallelism::Fine, Parallelism::Coarse, Parallelism::Auto];

fn mode_name(p: Parallelism) -> &'static str {
    match p {
        Parallelism::Fine => "fine",
        Parallelism::Coarse => "coarse",
        Parallelism::Auto => "auto",
    }
}

/// The library's best rate for a run (the highest texts/s over its modes).
fn best_rate(baselines: &[Baseline], clients: usize, per_request: usize) -> Option<&Baseline> {
    baselines
        .iter()
        .filter(|b| b.clients == clients && b.per_request == per_request)
        .max_by(|a, b| a.texts_per_s().total_cmp(&b.texts_per_s()))
}

/// The library's fastest median call for a run (the lowest p50 over its modes).
fn best_latency(baselines: &[Baseline], clients: usize, per_request: usize) -> Option<&Baseline> {
    baselines
        .iter()
        .filter(|b| b.clients == clients && b.per_request == per_request)
        .min_by(|a, b| a.p50_ms().total_cmp(&b.p50_ms()))
}

fn parse_runs(s: &str) -> anyhow::Result<Vec<(usize, usize)>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (c, k) = p.split_once('x').with_context(|| format!("run {p:?} is not CLIENTSxTEXTS"))?;
            let c: usize = c.parse().with_context(|| format!("clients in {p:?}"))?;
            let k: usize = k.parse().with_context(|| format!("texts in {p:?}"))?;
            if c == 0 || k == 0 {
                bail!("run {p:?}: clients and texts must be at least 1");
            }
            Ok((c, k))
        })
        .collect()
}

pub fn run(args: &ServeArgs, model: &Path) -> anyhow::Result<PathBuf> {
    let runs = parse_runs(&args.runs)?;
    if args.slices == 0 {
        bail!("--slices must be at least 1");
    }
    let pool = shuffled(load_sentences(&args.inputs.texts_path())?);
    let mut machine = Machine::detect();
    let model_info = ModelInfo::of(model)?;
    let threads = args.threads.unwrap_or(machine.cores);
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => ensure_release_bin()?,
    };
    let _lock = args.lock.as_deref().map(crate::machine::hold_lock).transpose()?;

    let embedder = Embedder::builder().model(model).threads(threads).build().context("loading the model")?;
    machine.isa = embedder.isa().name().to_string();
    let out = args.inputs.out_dir(&machine, "bench-serve");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("bench-client")
        .build()?;
    let pool = Arc::new(pool);
    let mut servers: Vec<(String, ServerProc)> = Vec::new();
    eprintln!("bench-serve: starting ggufembed serve");
    servers.push(("ggufembed serve".into(), start_ours(&bin, model, threads, &args.serve_args, &out)?));
    if let Some(peer) = &args.peer_llama_server {
        eprintln!("bench-serve: starting llama-server");
        servers.push(("llama-server".into(), start_llama(peer, model, threads, args.peer_slots, &out)?));
    }
    for (name, server) in &mut servers {
        let checked = client_rt.block_on(check_answers(&server.base, &pool, model, threads));
        if let Err(e) = checked {
            server.stop();
            return Err(e.context(format!("{name} answered wrongly")));
        }
    }

    let slice = Duration::from_secs_f64(args.duration / args.slices as f64);
    let warmup = Duration::from_secs_f64(args.warmup);
    let mut results = Vec::new();
    let mut baselines = Vec::new();
    for &(clients, per_request) in &runs {
        eprintln!(
            "bench-serve: {clients} clients x {per_request} texts: {} rounds of {:.1} s per target",
            args.slices,
            slice.as_secs_f64()
        );
        let batch = clients * per_request;
        let mut bases: Vec<Baseline> = LIBRARY_MODES
            .iter()
            .map(|&mode| Baseline { mode, clients, per_request, batch, texts: 0, seconds: 0.0, calls_ms: Vec::new() })
            .collect();
        let mut merged: Vec<Option<RunResult>> = vec![None; servers.len()];
        for round in 0..args.slices {
            // Every target starts the round at the same place in the (shuffled) pool.
            let start = round * pool.len() / args.slices;
            for base in &mut bases {
                library_slice(&embedder, &pool, batch, round, start, slice, base)?;
            }
            for (i, (name, server)) in servers.iter().enumerate() {
                let before = pass_counters(&server.base);
                let began = Instant::now();
                let mut r = client_rt.block_on(load(name, &server.base, Arc::clone(&pool), start, clients, per_request, warmup, slice))?;
                if let (Some(b0), Some(b1)) = (before, pass_counters(&server.base)) {
                    r.passes = Some((b1.0 - b0.0, b1.1 - b0.1, b1.2 - b0.2, began.elapsed().as_secs_f64()));
                }
                merged[i] = Some(match merged[i].take() {
                    None => r,
                    Some(m) => m.merge(r),
                });
            }
        }
        for base in &bases {
            eprintln!("  library batch {batch}, {}: {} texts/s", mode_name(base.mode), sig3(base.texts_per_s()));
        }
        for r in merged.into_iter().flatten() {
            eprintln!(
                "  {}: {} texts/s, p50 {} ms, p99 {} ms, {} rejected, {} errors",
                r.server,
                sig3(r.texts_per_s()),
                sig3(r.p(50.0)),
                sig3(r.p(99.0)),
                r.rejected,
                r.errors
            );
            results.push(r);
        }
        baselines.extend(bases);
    }
    for (_, server) in &mut servers {
        server.stop();
    }
    write_report(&out, &machine, &model_info, args, threads, &baselines, &results)?;
    eprintln!("bench-serve: wrote {}", out.join("SERVE.md").display());
    Ok(out)
}

/// `target/release/ggufembed`, built with `cargo build --release -p ggufembed` first.
fn ensure_release_bin() -> anyhow::Result<PathBuf> {
    let root = crate::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "ggufembed"])
        .current_dir(&root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p ggufembed failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("ggufembed"))
}

/// The pool in a fixed pseudo-random order. The STS-B file is sorted by genre, and its
/// sentences grow from about 33 to 110 characters along it: a target that gets further through
/// the pool in a slice would otherwise be measured on longer texts than one that does not.
fn shuffled(mut pool: Vec<String>) -> Vec<String> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..pool.len()).rev() {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        pool.swap(i, (z % (i as u64 + 1)) as usize);
    }
    pool
}

/// One round of the library's baseline in `base.mode`: calls of `batch` texts for `each`,
/// from `start` in the pool, where every target starts this round.
fn library_slice(
    e: &Embedder,
    pool: &[String],
    batch: usize,
    round: usize,
    start: usize,
    each: Duration,
    base: &mut Baseline,
) -> anyhow::Result<()> {
    // Warm-up: the mode's scratch buffers, and Auto's first look at this batch size.
    if round == 0 {
        e.embed_with(&window_from(pool, pool.len() / 2, batch, 0), base.mode)?;
    }
    let mut k = 0;
    let t = Instant::now();
    while t.elapsed() < each {
        let w = window_from(pool, start, batch, k);
        let c = Instant::now();
        e.embed_with(&w, base.mode)?;
        base.calls_ms.push(c.elapsed().as_secs_f64() * 1e3);
        base.texts += batch;
        k += 1;
    }
    base.seconds += t.elapsed().as_secs_f64();
    Ok(())
}

struct ServerProc {
    child: Child,
    base: String,
}

impl ServerProc {
    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn log_file(out: &Path, name: &str) -> anyhow::Result<fs::File> {
    fs::File::create(out.join(name)).with_context(|| format!("creating {}", out.join(name).display()))
}

fn start_ours(bin: &Path, model: &Path, threads: usize, extra: &str, out: &Path) -> anyhow::Result<ServerProc> {
    let mut child = Command::new(bin)
        .args(["serve", "--port", "0", "--threads", &threads.to_string(), "--model"])
        .arg(model)
        .args(extra.split_whitespace())
        .stdout(Stdio::piped())
        .stderr(log_file(out, "ggufembed-serve.log")?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("ggufembed serve printed {line:?}"))?
        .to_owned();
    let mut server = ServerProc { child, base };
    wait_healthy(&mut server)?;
    Ok(server)
}

fn start_llama(bin: &Path, model: &Path, threads: usize, slots: usize, out: &Path) -> anyhow::Result<ServerProc> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let t = threads.to_string();
    let np = slots.to_string();
    let p = port.to_string();
    // The settings of llama-server's --embd-gemma-default preset, on our model file.
    let child = Command::new(bin)
        .args(["-m"])
        .arg(model)
        .args(["--embeddings", "-t", &t, "-c", "65536", "-b", "2048", "-ub", "2048", "-np", &np])
        .args(["--host", "127.0.0.1", "--port", &p])
        .stdout(log_file(out, "llama-server.log")?)
        .stderr(log_file(out, "llama-server.err.log")?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut server = ServerProc {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_healthy(&mut server)?;
    Ok(server)
}

fn wait_healthy(server: &mut ServerProc) -> anyhow::Result<()> {
    let t = Instant::now();
    let url = format!("{}/health", server.base);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!("the server exited ({status}) before it was healthy");
        }
        if blocking_status(&url) == Some(200) {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("{url} not 200 within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET `url` over a raw HTTP/1.1 connection (no runtime needed): status and body.
fn blocking_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

fn blocking_status(url: &str) -> Option<u16> {
    blocking_get(url).map(|r| r.0)
}

/// `te_batch_next_size`'s sum and count from the server's `/metrics`, if it has them.
fn pass_counters(base: &str) -> Option<(f64, f64, f64)> {
    let (status, text) = blocking_get(&format!("{base}/metrics"))?;
    if status != 200 {
        return None;
    }
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    Some((
        value("te_batch_next_size_sum")?,
        value("te_batch_next_size_count")?,
        value("te_batch_inference_duration_sum")?,
    ))
}

/// The server's vector for a text is the library's (ours bit for bit; the peer's within its
/// own numerics: cosine > 0.99).
async fn check_answers(base: &str, pool: &[String], model: &Path, threads: usize) -> anyhow::Result<()> {
    let texts: Vec<&str> = pool.iter().take(4).map(String::as_str).collect();
    let body = serde_json::json!({"input": texts, "model": "embeddinggemma-300m", "encoding_format": "float"});
    let r = reqwest::Client::new().post(format!("{base}/v1/embeddings")).json(&body).send().await?;
    let status = r.status();
    let v: serde_json::Value = r.json().await?;
    if !status.is_success() {
        bail!("status {status}: {v}");
    }
    let e = Embedder::builder().model(model).threads(threads.min(2)).build()?;
    let want = e.embed(&texts)?;
    for (i, d) in v["data"].as_array().context("no data")?.iter().enumerate() {
        let got: Vec<f32> = d["embedding"]
            .as_array()
            .context("no embedding")?
            .iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
            .collect();
        let cos = crate::peer::cosine(&got, want.row(i));
        if cos < 0.99 {
            bail!("text {i}: cosine {cos:.4} with the library's vector");
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn load(
    name: &str,
    base: &str,
    pool: Arc<Vec<String>>,
    start: usize,
    clients: usize,
    per_request: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<RunResult> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!("{base}/v1/embeddings");
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let from = began + warmup;
    let end = from + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, pool, next) = (http.clone(), url.clone(), Arc::clone(&pool), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut samples: Vec<(f64, u16)> = Vec::new();
            while Instant::now() < end {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let texts = window_from(&pool[..], start, per_request, k);
                let body = serde_json::json!({"input": texts, "model": "embeddinggemma-300m", "encoding_format": "float"});
                let t0 = Instant::now();
                let status = match http.post(&url).json(&body).send().await {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        // The body is read in full, as a client would.
                        match r.bytes().await {
                            Ok(b) if s != 200 || b.first() == Some(&b'{') => s,
                            _ => 0,
                        }
                    }
                    Err(_) => 0,
                };
                let t1 = Instant::now();
                // Counted by when it completes, whenever it started: a closed loop's rate is
                // its completions per second. Counting only requests that both start and end
                // inside the window drops about one latency's worth of work at its edges
                // (22 % at 128 clients, 0.9 s latency, 4 s slices), more for a slower server.
                if t1 >= from && t1 <= end {
                    samples.push(((t1 - t0).as_secs_f64() * 1e3, status));
                }
                if status != 200 {
                    // A refused client backs off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            samples
        }));
    }
    let mut r = RunResult {
        server: name.to_owned(),
        clients,
        per_request,
        seconds: duration.as_secs_f64(),
        ok_requests: 0,
        ok_texts: 0,
        latencies_ms: Vec::new(),
        rejected: 0,
        errors: 0,
        passes: None,
    };
    for t in tasks {
        for (ms, status) in t.await? {
            match status {
                200 => {
                    r.ok_requests += 1;
                    r.ok_texts += per_request;
                    r.latencies_ms.push(ms);
                }
                429 | 503 => r.rejected += 1,
                _ => r.errors += 1,
            }
        }
    }
    Ok(r)
}

fn write_report(
    out: &Path,
    machine: &Machine,
    model: &ModelInfo,
    args: &ServeArgs,
    threads: usize,
    baselines: &[Baseline],
    results: &[RunResult],
) -> anyhow::Result<()> {
    let base_of = |c: usize, k: usize| best_rate(baselines, c, k);
    let mut csv = csv_record(&[
        "server", "clients", "texts_per_request", "seconds", "ok_requests", "ok_texts", "texts_per_s",
        "p50_ms", "p95_ms", "p99_ms", "rejected", "errors", "mean_inputs_per_pass", "ms_per_pass", "busy",
    ]);
    for b in baselines {
        csv.push_str(&csv_record(&[
            format!("library batch-{} {}", b.batch, mode_name(b.mode)),
            b.clients.to_string(),
            b.per_request.to_string(),
            format!("{:.3}", b.seconds),
            b.calls_ms.len().to_string(),
            b.texts.to_string(),
            format!("{:.2}", b.texts_per_s()),
            format!("{:.3}", b.p50_ms()),
            String::new(),
            String::new(),
            "0".into(),
            "0".into(),
            b.batch.to_string(),
            format!("{:.3}", b.p50_ms()),
            String::new(),
        ]));
    }
    let mut table = Table::new(&[
        "server", ">clients", ">texts/request", ">texts/s", ">library, same batch", ">vs library", ">p50 ms", ">p95 ms",
        ">p99 ms", ">rejected", ">errors", ">inputs/pass", ">ms/pass", ">busy",
    ]);
    for b in baselines {
        table.row([
            format!("library, batch {}, {}", b.batch, mode_name(b.mode)),
            b.clients.to_string(),
            b.per_request.to_string(),
            sig3(b.texts_per_s()),
            String::new(),
            String::new(),
            sig3(b.p50_ms()),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            b.batch.to_string(),
            sig3(b.p50_ms()),
            String::new(),
        ]);
    }
    for r in results {
        csv.push_str(&csv_record(&[
            r.server.clone(),
            r.clients.to_string(),
            r.per_request.to_string(),
            format!("{:.3}", r.seconds),
            r.ok_requests.to_string(),
            r.ok_texts.to_string(),
            format!("{:.2}", r.texts_per_s()),
            format!("{:.3}", r.p(50.0)),
            format!("{:.3}", r.p(95.0)),
            format!("{:.3}", r.p(99.0)),
            r.rejected.to_string(),
            r.errors.to_string(),
            r.mean_pass().map(|m| format!("{m:.2}")).unwrap_or_default(),
            r.ms_per_pass().map(|m| format!("{m:.3}")).unwrap_or_default(),
            r.busy().map(|b| format!("{b:.4}")).unwrap_or_default(),
        ]));
        let base = base_of(r.clients, r.per_request);
        table.row([
            r.server.clone(),
            r.clients.to_string(),
            r.per_request.to_string(),
            sig3(r.texts_per_s()),
            base.map(|b| sig3(b.texts_per_s())).unwrap_or_default(),
            base.map(|b| pct(r.texts_per_s() / b.texts_per_s())).unwrap_or_default(),
            sig3(r.p(50.0)),
            sig3(r.p(95.0)),
            sig3(r.p(99.0)),
            r.rejected.to_string(),
            r.errors.to_string(),
            r.mean_pass().map(sig3).unwrap_or_default(),
            r.ms_per_pass().map(sig3).unwrap_or_default(),
            r.busy().map(pct).unwrap_or_default(),
        ]);
    }
    fs::write(out.join("serve.csv"), &csv)?;

    let find = |server: &str, c: usize, k: usize| {
        results.iter().find(|r| r.server == server && r.clients == c && r.per_request == k)
    };
    let mut md = String::new();
    let _ = writeln!(md, "# bench-serve: `ggufembed serve` under closed-loop load\n");
    md.push_str(&machine.markdown(model));
    let _ = writeln!(
        md,
        "- **load**: runs {}; per run and target {} s measured, in {} rounds that each give the library, \
         ggufembed serve{} the same time in turn ({} s warm-up before each server slice); STS-B en-dev sentences from {}; \
         requests to `/v1/embeddings` with `encoding_format: float`, HTTP/1.1 keep-alive, client on the same machine\n\
         - **library baseline**: this process's `Embedder` in each mode (fine, coarse, auto), batches of the run's \
         clients × texts per request, i.e. the work of one full server pass, on the same texts; a server is compared \
         with the best mode's rate (\"library, same batch\") and, for latency, the fastest mode's median call\n\
         - **ms/pass, busy**: the server's mean forward pass (its `te_batch_inference_duration`; for the library, \
         the median call) and the share of the slices' wall time its batcher spent in passes\n\
         - **threads**: {threads} (library, ggufembed serve{} alike)\n- **serve args**: `{}`\n",
        args.runs,
        args.duration,
        args.slices,
        if args.peer_llama_server.is_some() { ", llama-server" } else { "" },
        args.warmup,
        args.inputs.texts_path().display(),
        if args.peer_llama_server.is_some() { ", llama-server" } else { "" },
        if args.serve_args.is_empty() { "(defaults)" } else { &args.serve_args },
    );
    let _ = writeln!(md, "## Results\n\n{}", table.to_markdown());
    let _ = writeln!(md, "## Targets\n");
    let ours = "ggufembed serve";
    if let (Some(r), Some(b)) = (find(ours, 32, 1), base_of(32, 1)) {
        let ratio = r.texts_per_s() / b.texts_per_s();
        let _ = writeln!(
            md,
            "- 32 clients × 1 text: {} texts/s = {} of the library's best batch-32 rate in the same rounds, {} texts/s ({}) (target ≥ 90 %): **{}**",
            sig3(r.texts_per_s()),
            pct(ratio),
            sig3(b.texts_per_s()),
            mode_name(b.mode),
            if ratio >= 0.9 { "met" } else { "missed" }
        );
        if let Some(p) = find("llama-server", 32, 1) {
            let x = r.texts_per_s() / p.texts_per_s();
            let _ = writeln!(
                md,
                "- 32 clients × 1 text vs llama-server: {x:.2}× (target ≥ 5×): **{}**",
                if x >= 5.0 { "met" } else { "missed" }
            );
        }
    }
    let errs: usize = results.iter().filter(|r| r.server == ours).map(|r| r.errors).sum();
    let _ = writeln!(md, "- errors over every run of ggufembed serve: {errs}");
    if let (Some(r), Some(b)) = (find(ours, 1, 1), best_latency(baselines, 1, 1)) {
        let ratio = r.p(50.0) / b.p50_ms();
        let _ = writeln!(
            md,
            "- 1 client: median latency {} ms = {:.2}× the library's fastest batch-1 call of {} ms ({}; median, same rounds; target ≤ 1.15×): **{}**",
            sig3(r.p(50.0)),
            ratio,
            sig3(b.p50_ms()),
            mode_name(b.mode),
            if ratio <= 1.15 { "met" } else { "missed" }
        );
    }
    md.push_str("\n![texts/s against concurrent clients](serve.svg)\n");
    fs::write(out.join("SERVE.md"), md)?;
    plot(&out.join("serve.svg"), results, baselines)?;
    Ok(())
}

/// texts/s against concurrent clients (log₂ axis), one line per server and texts-per-request,
/// and the library's rate at each run's batch size (one text per request).
fn plot(path: &Path, results: &[RunResult], baselines: &[Baseline]) -> anyhow::Result<()> {
    use anyhow::anyhow;
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results {
        let name = format!("{} ({} text{}/request)", r.server, r.per_request, if r.per_request == 1 { "" } else { "s" });
        let point = ((r.clients as f64).log2(), r.texts_per_s());
        match series.iter_mut().find(|s| s.0 == name) {
            Some(s) => s.1.push(point),
            None => series.push((name, vec![point])),
        }
    }
    let x_max = results.iter().map(|r| (r.clients as f64).log2()).fold(1.0, f64::max);
    let y_max = results
        .iter()
        .map(RunResult::texts_per_s)
        .chain(baselines.iter().map(Baseline::texts_per_s))
        .fold(1.0, f64::max)
        * 1.15;
    let library: Vec<(f64, f64)> = baselines
        .iter()
        .filter(|b| b.per_request == 1 && b.mode == Parallelism::Auto)
        .filter_map(|b| best_rate(baselines, b.clients, 1))
        .map(|b| ((b.clients as f64).log2(), b.texts_per_s()))
        .collect();
    if !library.is_empty() {
        series.push(("library (best mode), batch = clients".into(), library));
    }
    let root = SVGBackend::new(path, (860, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("texts/s under closed-loop load", ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.2f64..x_max + 0.2, 0f64..y_max.max(1e-9))
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc("texts / s")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| format!("{}", 2f64.powf(x.round()) as u64))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    let colours = [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xd6, 0x27, 0x28), RGBColor(0x2c, 0xa0, 0x2c), RGBColor(0xff, 0x7f, 0x0e), RGBColor(0x7f, 0x7f, 0x7f)];
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_parse() {
        assert_eq!(parse_runs("1x1, 32x1,8x16").unwrap(), vec![(1, 1), (32, 1), (8, 16)]);
        assert!(parse_runs("0x1").is_err());
        assert!(parse_runs("32").is_err());
    }

    #[test]
    fn the_shuffle_is_a_fixed_permutation_that_mixes_the_pool() {
        let pool: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let a = shuffled(pool.clone());
        assert_eq!(a, shuffled(pool.clone()), "the same order every run");
        let mut sorted = a.clone();
        sorted.sort_by_key(|s| s.parse::<usize>().unwrap());
        assert_eq!(sorted, pool, "a permutation");
        // The first tenth draws from the whole file, not from its first tenth.
        let late = a[..100].iter().filter(|s| s.parse::<usize>().unwrap() >= 500).count();
        assert!((30..=70).contains(&late), "{late} of the first 100 come from the second half");
    }

    #[test]
    fn windows_start_where_the_round_starts_and_wrap() {
        let pool: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(window_from(&pool, 8, 3, 0), ["8", "9", "0"]);
        assert_eq!(window_from(&pool, 8, 3, 1), ["1", "2", "3"]);
    }
}
