//! `cargo xtask bench-matrix`: throughput and latency over batch size × mode × threads, on short
//! and long texts, optionally beside llama.cpp, with the crossover and the `auto` check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::analysis::{AUTO_TOLERANCE, AutoCheck, auto_check, crossover, paired_noise};
use crate::engine::{Engine, Mode};
use crate::machine::{Machine, ModelInfo};
use crate::measure::{Budget, Runs, engine_column, measure_round_robin};
use crate::libllama::Libllama;
use crate::peer::{Peer, cosine};
use crate::plot::{Series, throughput_svg};
use crate::render::{Table, csv_record, pct, sig3};
use crate::workload::{build_long_texts, load_sentences, parse_sizes, parse_threads, window};

/// Peers the matrix can run beside the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerKind {
    /// llama.cpp through the llama-cpp-python package.
    LlamaCpp,
    /// llama.cpp through libllama's C API, by the `eg_embd_bench` harness (`--peer-bin`).
    Libllama,
}

/// Options of `cargo xtask bench-matrix`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Batch sizes for short texts.
    #[arg(long, default_value = "1,2,4,8,16,32,64,128")]
    pub batches: String,
    /// Batch sizes for long texts (each text ~--long-tokens tokens; fewer sizes keep the run short).
    #[arg(long, default_value = "1,2,4,8")]
    pub long_batches: String,
    /// Modes, in the order they run at each point.
    #[arg(long, default_value = "fine,coarse,auto")]
    pub modes: String,
    /// Thread counts (`all` = every available core); duplicates collapse.
    #[arg(long, default_value = "1,2,all")]
    pub threads: String,
    /// Token target of a long text (consecutive sentences joined until the next would exceed it).
    #[arg(long, default_value_t = 512)]
    pub long_tokens: usize,
    /// Skip the long-text half of the matrix.
    #[arg(long)]
    pub skip_long: bool,
    /// Untimed calls per cell before timing.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Fewest timed calls per short-text cell.
    #[arg(long, default_value_t = 3)]
    pub min_reps: usize,
    /// Most timed calls per cell.
    #[arg(long, default_value_t = 200)]
    pub max_reps: usize,
    /// Short-text cells repeat until their timed calls add up to this many milliseconds (2 s:
    /// on a shared VM single calls jitter by ±10 %, and the auto check needs a few percent).
    #[arg(long, default_value_t = 2000)]
    pub min_time_ms: u64,
    /// Untimed calls per long-text cell (the short cells before them have already paged the
    /// weights in and sized the scratch buffers, and one long call takes seconds).
    #[arg(long, default_value_t = 0)]
    pub long_warmup: usize,
    /// Fewest timed calls per long-text cell.
    #[arg(long, default_value_t = 2)]
    pub long_min_reps: usize,
    /// Long-text cells repeat until their timed calls add up to this many milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub long_min_time_ms: u64,
    /// Also run this peer on the same texts, model and threads (optional, not part of CI).
    #[arg(long, value_enum)]
    pub peer: Option<PeerKind>,
    /// Python interpreter that has llama-cpp-python installed (`--peer llama-cpp`).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The `eg_embd_bench` harness for `--peer libllama` (built by
    /// `bash ../shared/tools/llama-peer/build.sh DIR` as DIR/eg_embd_bench).
    #[arg(long, value_name = "PATH")]
    pub peer_bin: Option<PathBuf>,
    /// llama.cpp n_ctx = n_batch = n_ubatch (tokens per decode). Attention is non-causal, so a
    /// whole text must fit one micro-batch.
    #[arg(long, default_value_t = 2048)]
    pub peer_n_batch: usize,
    /// Run the whole matrix this many times (each into `run-N/` under the output folder) and
    /// summarise the auto check of every run in AUTO-CHECK.md: Auto must hold on more than one
    /// day's machine.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Minutes to wait between repeated runs (the target asks for runs an hour apart).
    #[arg(long, default_value_t = 0.0)]
    pub gap_minutes: f64,
    /// Hold an exclusive lock on this file while a run measures (not while it waits between
    /// runs), so cooperating jobs on the machine (`flock FILE cargo build ...`) keep off it.
    #[arg(long)]
    pub lock: Option<PathBuf>,
    #[command(flatten)]
    pub inputs: crate::workload::Inputs,
}

/// Runs the matrix `--repeat` times; one run writes where `run` does.
pub fn run_repeated(args: &BenchArgs, model: &Path, open: &dyn Fn(usize) -> anyhow::Result<Box<dyn Engine>>) -> anyhow::Result<PathBuf> {
    if args.repeat <= 1 {
        return run(args, model, open);
    }
    let mut machine = Machine::detect();
    machine.isa = open(1)?.isa();
    let base = args.inputs.out_dir(&machine, "bench-matrix");
    let mut summary = String::from("# Auto check over repeated bench-matrix runs\n\n");
    for i in 1..=args.repeat {
        if i > 1 && args.gap_minutes > 0.0 {
            eprintln!("bench-matrix: waiting {:.0} min before run {i}", args.gap_minutes);
            std::thread::sleep(Duration::from_secs_f64(args.gap_minutes * 60.0));
        }
        let mut one = args.clone();
        one.repeat = 1;
        one.inputs.out = Some(base.join(format!("run-{i}")));
        let started = chrono_like_now();
        let out = run(&one, model, open)?;
        let md = fs::read_to_string(out.join("MATRIX.md"))?;
        let _ = writeln!(summary, "## Run {i} (started {started}; [MATRIX.md](run-{i}/MATRIX.md))\n");
        // The verdict bullets: the auto check line and its sub-bullets.
        let mut on = false;
        for line in md.lines() {
            if line.starts_with("- **auto check") || line.starts_with("- ⚠️ **AUTO CHECK") {
                on = true;
            } else if on && !line.starts_with("  ") {
                on = false;
            }
            if on {
                let _ = writeln!(summary, "{line}");
            }
        }
        summary.push('\n');
        fs::write(base.join("AUTO-CHECK.md"), &summary)?;
    }
    eprintln!("bench-matrix: wrote {}", base.join("AUTO-CHECK.md").display());
    Ok(base)
}

/// UTC wall-clock time as `HH:MM:SS` (enough to show runs were apart; no date crate needed).
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02} UTC", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// Short sentences or ~512-token texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// STS-B en-dev sentences.
    Short,
    /// Consecutive sentences joined to ~512 tokens.
    Long,
}

impl Kind {
    /// Name used in files and tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Long => "long",
        }
    }
}

/// A column of the matrix: one of our modes, or the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// The runtime in a mode.
    Ours(Mode),
    /// llama.cpp.
    Peer,
}

impl Column {
    /// Name used in files and tables.
    pub fn name(self) -> &'static str {
        match self {
            Column::Ours(m) => m.name(),
            Column::Peer => "llama.cpp",
        }
    }
}

/// One measured cell.
#[derive(Debug, Clone)]
pub struct Point {
    /// Text kind.
    pub kind: Kind,
    /// Threads.
    pub threads: usize,
    /// Texts per call.
    pub batch: usize,
    /// Mode or peer.
    pub column: Column,
    /// The timed calls.
    pub runs: Runs,
}

/// The cosine cross-check against the peer.
#[derive(Debug, Clone)]
pub struct PeerCheck {
    /// (text kind, our tokens, peer tokens, cosine).
    pub rows: Vec<(Kind, usize, usize, f64)>,
}

/// Runs the command. `open` builds an engine with the given thread count.
pub fn run(args: &BenchArgs, model: &Path, open: &dyn Fn(usize) -> anyhow::Result<Box<dyn Engine>>) -> anyhow::Result<PathBuf> {
    let _lock = args.lock.as_deref().map(crate::machine::hold_lock).transpose()?;
    let started = Instant::now();
    let mut machine = Machine::detect();
    let model_info = ModelInfo::of(model)?;
    let texts_path = args.inputs.texts_path();
    let short_pool = load_sentences(&texts_path)?;
    let modes = crate::engine::parse_modes(&args.modes).map_err(anyhow::Error::msg)?;
    let threads = parse_threads(&args.threads, machine.cores).map_err(anyhow::Error::msg)?;
    let short_batches = parse_sizes(&args.batches).map_err(anyhow::Error::msg)?;
    let long_batches = if args.skip_long { Vec::new() } else { parse_sizes(&args.long_batches).map_err(anyhow::Error::msg)? };
    let short_budget = Budget {
        warmup: args.warmup,
        min_reps: args.min_reps.max(1),
        max_reps: args.max_reps.max(args.min_reps.max(1)),
        min_time: Duration::from_millis(args.min_time_ms),
    };
    let long_budget = Budget {
        warmup: args.long_warmup,
        min_reps: args.long_min_reps.max(1),
        max_reps: args.max_reps.max(args.long_min_reps.max(1)),
        min_time: Duration::from_millis(args.long_min_time_ms),
    };
    let mut first = Some(open(threads[0])?);
    if let Some(e) = &first {
        machine.isa = e.isa();
    }
    let out = args.inputs.out_dir(&machine, "bench-matrix");
    fs::create_dir_all(out.join("plots")).with_context(|| format!("creating {}", out.display()))?;

    let mut peer = match args.peer {
        Some(PeerKind::LlamaCpp) => Some(Peer::start(&args.python)?),
        _ => None,
    };
    let libllama = match args.peer {
        Some(PeerKind::Libllama) => {
            let bin = args.peer_bin.as_deref().context("--peer libllama needs --peer-bin PATH (the eg_embd_bench harness)")?;
            Some(Libllama::new(bin)?)
        }
        _ => None,
    };
    let about_peer = match (&peer, &libllama) {
        (Some(p), _) => about(&p.about),
        (None, Some(l)) => l.about.clone(),
        (None, None) => String::new(),
    };

    let mut points = Vec::new();
    let mut long_pool: Vec<String> = Vec::new();
    let mut long_tokens: Vec<usize> = Vec::new();
    let mut check = None;
    let total_cells = threads.len() * (short_batches.len() + long_batches.len()) * (modes.len() + usize::from(args.peer.is_some()));
    let mut done = 0;
    for (ti, &t) in threads.iter().enumerate() {
        let engine = match first.take() {
            Some(e) => e,
            None => open(t)?,
        };
        if long_pool.is_empty() && !long_batches.is_empty() {
            let n = long_batches.iter().max().copied().unwrap_or(1) * 2;
            let long = build_long_texts(&short_pool, args.long_tokens, n, |s| engine.token_count(s))?;
            long_tokens = long.iter().map(|l| l.tokens).collect();
            long_pool = long.into_iter().map(|l| l.text).collect();
            if let Some(p) = peer.as_mut() {
                p.pool("long", &long_pool)?;
            }
        }
        if let (0, Some(p)) = (ti, peer.as_mut()) {
            p.pool("short", &short_pool)?;
        }
        if let Some(p) = peer.as_mut() {
            p.load(model, t, args.peer_n_batch)?;
        }
        let kinds: Vec<(Kind, &[String], &[usize], &Budget)> = {
            let mut k: Vec<(Kind, &[String], &[usize], &Budget)> = vec![(Kind::Short, &short_pool, &short_batches, &short_budget)];
            if !long_batches.is_empty() {
                k.push((Kind::Long, &long_pool, &long_batches, &long_budget));
            }
            k
        };
        for (kind, pool, batches, budget) in kinds {
            for &b in batches {
                let mut columns: Vec<Column> = modes.iter().map(|&m| Column::Ours(m)).collect();
                let mut runners: Vec<crate::measure::Column<'_>> =
                    modes.iter().map(|&m| engine_column(engine.as_ref(), pool, b, m)).collect();
                if let Some(p) = peer.as_mut() {
                    let name = kind.name();
                    runners.push(Box::new(move |k| p.rep(name, b, k)));
                    columns.push(Column::Peer);
                }
                let mut results = measure_round_robin(&mut runners, b, budget)?;
                drop(runners);
                if let Some(l) = &libllama {
                    // The batches our columns ran, once each, right after them.
                    let calls = results.first().map_or(budget.min_reps, |r| r.latencies.len()).max(1);
                    let batches: Vec<Vec<&str>> = (0..calls).map(|k| window(pool, b, k)).collect();
                    results.push(l.measure(model, t, &batches)?);
                    columns.push(Column::Peer);
                }
                let mut line = format!("[{:>4.0} s] {:<5} t={t} b={b:<3}", started.elapsed().as_secs_f64(), kind.name());
                for (column, runs) in columns.into_iter().zip(results) {
                    let _ = write!(line, " {} {}", column.name(), sig3(runs.texts_per_s()));
                    if column == Column::Ours(Mode::Auto) {
                        let _ = write!(line, " ({})", runs.ran_label());
                    }
                    points.push(Point { kind, threads: t, batch: b, column, runs });
                    done += 1;
                }
                eprintln!("{line}  texts/s  [{done}/{total_cells}]");
            }
        }
        // Cross-check with the peer once, at the largest thread count.
        if let (true, Some(p)) = (ti + 1 == threads.len(), peer.as_mut()) {
            check = Some(peer_check(engine.as_ref(), p, &short_pool, &long_pool)?);
        }
    }
    let peer_n_batch = peer.as_ref().map(|_| args.peer_n_batch);
    drop(peer);

    let settings = Settings {
        texts_path: texts_path.display().to_string(),
        short_budget,
        long_budget,
        long_target: args.long_tokens,
        long_tokens,
        peer_n_batch,
        elapsed: started.elapsed(),
        about_peer,
    };
    fs::write(out.join("matrix.csv"), csv(&points))?;
    let plots = write_plots(&out, &points)?;
    fs::write(out.join("MATRIX.md"), markdown(&machine, &model_info, &settings, &points, check.as_ref(), &plots))?;
    eprintln!("bench-matrix: wrote {} in {:.0} s", out.display(), started.elapsed().as_secs_f64());
    Ok(out)
}

fn about(v: &serde_json::Value) -> String {
    let get = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("?").to_string();
    format!("llama-cpp-python {}, Python {}; llama.cpp system info: `{}`", get("llama_cpp_python"), get("python"), get("system_info"))
}

fn peer_check(engine: &dyn Engine, peer: &mut Peer, short: &[String], long: &[String]) -> anyhow::Result<PeerCheck> {
    let mut texts: Vec<(Kind, &str)> = window(short, 6, 0).into_iter().map(|t| (Kind::Short, t)).collect();
    texts.extend(long.iter().take(2).map(|t| (Kind::Long, t.as_str())));
    let plain: Vec<&str> = texts.iter().map(|t| t.1).collect();
    let ours = engine.vectors(&plain)?;
    let (theirs, their_tokens) = peer.vectors(&plain)?;
    let mut rows = Vec::new();
    for (i, (kind, text)) in texts.iter().enumerate() {
        rows.push((*kind, engine.token_count(text)?, their_tokens.get(i).copied().unwrap_or(0), cosine(&ours[i], &theirs[i])));
    }
    Ok(PeerCheck { rows })
}

/// How the run was set up, for the report.
pub struct Settings {
    /// Where the short texts came from.
    pub texts_path: String,
    /// Short-text budget.
    pub short_budget: Budget,
    /// Long-text budget.
    pub long_budget: Budget,
    /// Long-text token target.
    pub long_target: usize,
    /// Token counts of the long texts.
    pub long_tokens: Vec<usize>,
    /// llama.cpp batch size, when the peer ran.
    pub peer_n_batch: Option<usize>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Versions the peer reported.
    pub about_peer: String,
}

/// The full matrix as CSV, one row per cell.
pub fn csv(points: &[Point]) -> String {
    let mut s = csv_record(&[
        "kind", "threads", "batch", "mode", "ran", "reps", "texts_per_s", "tokens_per_s", "p50_ms", "p99_ms", "cpu_ms_per_text", "cpu_util",
        "latency_cv", "tokens_per_text",
    ]);
    for p in points {
        let r = &p.runs;
        s.push_str(&csv_record(&[
            p.kind.name().to_string(),
            p.threads.to_string(),
            p.batch.to_string(),
            p.column.name().to_string(),
            r.ran_label(),
            r.latencies.len().to_string(),
            format!("{:.3}", r.texts_per_s()),
            format!("{:.1}", r.tokens_per_s()),
            format!("{:.3}", r.p50_ms()),
            format!("{:.3}", r.p99_ms()),
            format!("{:.3}", r.cpu_ms_per_text()),
            format!("{:.3}", r.cpu_util()),
            format!("{:.4}", r.cv()),
            format!("{:.1}", r.tokens_per_text()),
        ]));
    }
    s
}

type Groups<'a> = BTreeMap<(Kind, usize), BTreeMap<usize, BTreeMap<Column, &'a Runs>>>;

fn group(points: &[Point]) -> Groups<'_> {
    let mut g: Groups<'_> = BTreeMap::new();
    for p in points {
        g.entry((p.kind, p.threads)).or_default().entry(p.batch).or_default().insert(p.column, &p.runs);
    }
    g
}

fn write_plots(out: &Path, points: &[Point]) -> anyhow::Result<Vec<(Kind, usize, String)>> {
    let mut files = Vec::new();
    for ((kind, threads), by_batch) in group(points) {
        let columns: BTreeSet<Column> = by_batch.values().flat_map(|m| m.keys().copied()).collect();
        let series: Vec<Series> = columns
            .iter()
            .map(|&c| Series {
                name: c.name().to_string(),
                points: by_batch.iter().filter_map(|(&b, m)| m.get(&c).map(|r| (b, r.texts_per_s()))).collect(),
            })
            .collect();
        let name = format!("plots/{}-t{threads}.svg", kind.name());
        let title = format!("{} texts, {threads} thread{}", kind.name(), if threads == 1 { "" } else { "s" });
        throughput_svg(&out.join(&name), &title, &series)?;
        files.push((kind, threads, name));
    }
    Ok(files)
}

/// The MATRIX.md text.
pub fn markdown(
    machine: &Machine,
    model: &ModelInfo,
    settings: &Settings,
    points: &[Point],
    check: Option<&PeerCheck>,
    plots: &[(Kind, usize, String)],
) -> String {
    let groups = group(points);
    let mut s = String::new();
    let _ = writeln!(s, "# Bench matrix: batch size × parallelism mode × threads\n");
    s.push_str(&machine.markdown(model));
    let b = &settings.short_budget;
    let l = &settings.long_budget;
    let _ = writeln!(
        s,
        "- **short texts**: STS-B en-dev sentences ({}), batch k = sentences k·b .. k·b+b−1 (wrapping)\n\
         - **long texts**: consecutive en-dev sentences joined by a space up to {} tokens ({} texts, {} tokens each)\n\
         - **repetitions**: the columns of a point run round-robin on the same batches (a load spike hits all alike); per column {} untimed warm-up call(s) (short) / {} (long), then timed calls until ≥ {} calls and ≥ {} ms (short) / ≥ {} calls and ≥ {} ms (long), at most {} calls\n\
         - **whole run**: {:.0} s{}\n",
        settings.texts_path,
        settings.long_target,
        settings.long_tokens.len(),
        range_label(&settings.long_tokens),
        b.warmup,
        l.warmup,
        b.min_reps,
        b.min_time.as_millis(),
        l.min_reps,
        l.min_time.as_millis(),
        b.max_reps,
        settings.elapsed.as_secs_f64(),
        settings.peer_n_batch.map(|n| format!("; llama.cpp peer via llama-cpp-python, same GGUF and threads, n_ctx = n_batch = n_ubatch = {n}, mean pooling + dense head from the GGUF, normalize=True")).unwrap_or_default(),
    );
    let _ = writeln!(s, "Regenerate with `cargo xtask bench-matrix` (add `--peer llama-cpp` for the peer column); see `profiles/README.md`. Raw numbers: `matrix.csv`.\n");

    // Verdicts first.
    let mut wrong_pick = Vec::new();
    let mut same_code = Vec::new();
    let mut auto_points = 0;
    for ((kind, threads), by_batch) in &groups {
        for (batch, cols) in by_batch {
            if let Some(ck) = point_check(cols) {
                let (f, c, a) = (cols[&Column::Ours(Mode::Fine)], cols[&Column::Ours(Mode::Coarse)], cols[&Column::Ours(Mode::Auto)]);
                auto_points += 1;
                if !ck.ok {
                    let line = format!(
                        "{} texts, {threads} threads, batch {batch}: auto ran {} at {} texts/s = {} of {} ({} texts/s; fixed modes {} apart, noise band ±{}); latency cv auto {} / {} {}",
                        kind.name(),
                        a.ran_label(),
                        sig3(a.texts_per_s()),
                        pct(ck.ratio),
                        ck.best,
                        sig3(ck.best_tps),
                        pct((f.texts_per_s() / c.texts_per_s()).ln().abs()),
                        pct(ck.noise),
                        pct(a.cv()),
                        ck.best,
                        pct(if ck.best == Mode::Fine { f.cv() } else { c.cv() }),
                    );
                    // On one thread the runtime runs fine and coarse as the same serial passes
                    // (one worker has nothing to balance), so a gap is noise whatever auto picked.
                    if ck.picked_best || *threads == 1 { same_code.push(line) } else { wrong_pick.push(line) }
                }
            }
        }
    }
    let _ = writeln!(s, "## Verdicts\n");
    if auto_points == 0 {
        let _ = writeln!(s, "- **auto check**: not run (needs fine, coarse and auto in --modes)");
    } else if wrong_pick.is_empty() && same_code.is_empty() {
        let _ = writeln!(
            s,
            "- **auto check: PASS** — at all {auto_points} points auto was within {} of the best fixed mode, or the fixed modes were within the point's noise band and auto within {} plus that band",
            pct(1.0 - AUTO_TOLERANCE),
            pct(1.0 - AUTO_TOLERANCE)
        );
    } else {
        let _ = writeln!(
            s,
            "- ⚠️ **AUTO CHECK FAILED at {} of {auto_points} points** (auto below {} of the best fixed mode):",
            wrong_pick.len() + same_code.len(),
            pct(AUTO_TOLERANCE)
        );
        if !wrong_pick.is_empty() {
            let _ = writeln!(s, "  - **{} with the wrong mode picked — the auto rule needs fixing:**", wrong_pick.len());
            for v in &wrong_pick {
                let _ = writeln!(s, "    - ⚠️ {v}");
            }
        }
        if !same_code.is_empty() {
            let _ = writeln!(
                s,
                "  - {} where auto picked the faster mode (on at least 90 % of calls), or ran on one thread, but measured slower than the best column (same code path: run-to-run noise or planning overhead, compare the latency cv):",
                same_code.len()
            );
            for v in &same_code {
                let _ = writeln!(s, "    - ⚠️ {v}");
            }
        }
    }
    for ((kind, threads), by_batch) in &groups {
        let pts: Vec<(usize, f64, f64)> = by_batch
            .iter()
            .filter_map(|(&b, cols)| Some((b, cols.get(&Column::Ours(Mode::Fine))?.texts_per_s(), cols.get(&Column::Ours(Mode::Coarse))?.texts_per_s())))
            .collect();
        if let Some(c) = crossover(&pts) {
            let note = if *threads == 1 { " (1 thread: both modes run the same serial code, differences are noise)" } else { "" };
            let _ = writeln!(s, "- **crossover, {} texts, {threads} threads**: {c}{note}", kind.name());
        }
    }
    for ((kind, threads), by_batch) in &groups {
        let ratios: Vec<(usize, f64)> = by_batch
            .iter()
            .filter_map(|(&b, cols)| Some((b, cols.get(&Column::Ours(Mode::Auto))?.texts_per_s() / cols.get(&Column::Peer)?.texts_per_s())))
            .collect();
        if !ratios.is_empty() {
            let list: Vec<String> = ratios.iter().map(|(b, r)| format!("b{b} {r:.2}×")).collect();
            let _ = writeln!(s, "- **vs llama.cpp, {} texts, {threads} threads** (ours auto ÷ llama.cpp texts/s): {}", kind.name(), list.join(", "));
        }
    }
    s.push('\n');

    for ((kind, threads), by_batch) in &groups {
        let _ = writeln!(s, "## {} texts, {threads} thread{}\n", capitalise(kind.name()), if *threads == 1 { "" } else { "s" });
        if let Some((_, _, file)) = plots.iter().find(|(k, t, _)| k == kind && t == threads) {
            let _ = writeln!(s, "![throughput vs batch size]({file})\n");
        }
        let has_peer = by_batch.values().any(|c| c.contains_key(&Column::Peer));
        let mut header: Vec<String> =
            vec![">batch".into(), ">fine".into(), ">coarse".into(), ">auto".into(), "auto ran".into(), "best fixed".into(), ">fixed gap".into(), ">noise ±".into(), ">auto ÷ best".into()];
        if has_peer {
            header.extend([">llama.cpp".to_string(), ">auto ÷ llama.cpp".to_string()]);
        }
        let mut t = Table::new(&header);
        for (batch, cols) in by_batch {
            let tps = |c: Column| cols.get(&c).map(|r| r.texts_per_s());
            let cell = |c: Column| tps(c).map(sig3).unwrap_or_default();
            let (best, gap, noise, ratio) = match point_check(cols) {
                Some(ck) => (
                    ck.best.name().to_string(),
                    pct((tps(Column::Ours(Mode::Fine)).unwrap_or(1.0) / tps(Column::Ours(Mode::Coarse)).unwrap_or(1.0)).ln().abs()),
                    pct(ck.noise),
                    if ck.ok { pct(ck.ratio) } else { format!("⚠️ **{}**", pct(ck.ratio)) },
                ),
                None => Default::default(),
            };
            let mut row = vec![
                batch.to_string(),
                cell(Column::Ours(Mode::Fine)),
                cell(Column::Ours(Mode::Coarse)),
                cell(Column::Ours(Mode::Auto)),
                cols.get(&Column::Ours(Mode::Auto)).map(|r| r.ran_label()).unwrap_or_default(),
                best,
                gap,
                noise,
                ratio,
            ];
            if has_peer {
                row.push(cell(Column::Peer));
                row.push(match (tps(Column::Ours(Mode::Auto)), tps(Column::Peer)) {
                    (Some(a), Some(p)) => format!("{:.2}×", a / p),
                    _ => String::new(),
                });
            }
            t.row(row);
        }
        let _ = writeln!(s, "Throughput in texts/s.\n");
        s.push_str(&t.to_markdown());
        s.push('\n');
    }

    let _ = writeln!(s, "## Full table\n");
    let mut t = Table::new(&[
        "kind", ">threads", ">batch", "mode", "ran", ">reps", ">texts/s", ">tokens/s", ">p50 ms", ">p99 ms", ">CPU-ms/text", ">CPU util", ">latency cv",
    ]);
    for p in points {
        let r = &p.runs;
        t.row([
            p.kind.name().to_string(),
            p.threads.to_string(),
            p.batch.to_string(),
            p.column.name().to_string(),
            r.ran_label(),
            r.latencies.len().to_string(),
            sig3(r.texts_per_s()),
            sig3(r.tokens_per_s()),
            sig3(r.p50_ms()),
            sig3(r.p99_ms()),
            sig3(r.cpu_ms_per_text()),
            if r.cpu_util().is_finite() { format!("{:.2}", r.cpu_util()) } else { "n/a".into() },
            pct(r.cv()),
        ]);
    }
    s.push_str(&t.to_markdown());
    let _ = writeln!(
        s,
        "\nCPU-ms/text and CPU util count every thread of the measuring process (ours) or of the Python process (llama.cpp); p50/p99 are per call (one batch)."
    );

    if let Some(c) = check {
        let _ = writeln!(s, "\n## Sanity check: same job as llama.cpp?\n");
        let _ = writeln!(s, "Cosine between our vector and llama.cpp's for the same text (Q8_0 on both sides, so ~0.99+ is expected, not 1.0):\n");
        let mut t = Table::new(&["text", ">our tokens", ">llama.cpp tokens", ">cosine"]);
        for (i, (kind, ours, theirs, cos)) in c.rows.iter().enumerate() {
            t.row([format!("{} #{i}", kind.name()), ours.to_string(), theirs.to_string(), format!("{cos:.5}")]);
        }
        s.push_str(&t.to_markdown());
    }
    if !settings.about_peer.is_empty() {
        let _ = writeln!(s, "\nPeer: {}", settings.about_peer);
    }
    s
}

/// The one mode `auto` ran on every call of a cell, if it was always the same.
/// The mode auto ran on at least 90 % of a point's calls: a learning Auto explores the other
/// mode now and then, and those few calls do not make the pick a different one.
fn single_mode(r: &Runs) -> Option<Mode> {
    let total: usize = r.ran.values().sum();
    r.ran.iter().find(|&(_, &n)| 10 * n >= 9 * total).and_then(|(k, _)| k.parse().ok())
}

fn range_label(v: &[usize]) -> String {
    match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}–{b}"),
        _ => "n/a".into(),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The auto check of one point, with its noise band from the fine and coarse calls paired by
/// round; `None` unless fine, coarse and auto all ran there.
fn point_check(cols: &BTreeMap<Column, &Runs>) -> Option<AutoCheck> {
    let f = cols.get(&Column::Ours(Mode::Fine))?;
    let c = cols.get(&Column::Ours(Mode::Coarse))?;
    let a = cols.get(&Column::Ours(Mode::Auto))?;
    let noise = paired_noise(&f.latencies, &c.latencies);
    Some(auto_check(f.texts_per_s(), c.texts_per_s(), a.texts_per_s(), single_mode(a), noise))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(batch: usize, tps: f64) -> Runs {
        let lat = batch as f64 / tps;
        Runs { batch, latencies: vec![lat, lat], cpu: vec![lat * 2.0, lat * 2.0], tokens: vec![batch * 10, batch * 10], ran: BTreeMap::from([("coarse".to_string(), 2)]) }
    }

    fn point(kind: Kind, threads: usize, batch: usize, column: Column, tps: f64) -> Point {
        Point { kind, threads, batch, column, runs: runs(batch, tps) }
    }

    fn machine() -> Machine {
        Machine {
            date: "2026-01-01".into(),
            time: "00:00:00".into(),
            host: "h".into(),
            cpu: "cpu".into(),
            cores: 2,
            isa: "avx2".into(),
            kernel: "k".into(),
            rustc: "rustc".into(),
            commit: "abc".into(),
            dirty_files: 0,
        }
    }

    fn settings() -> Settings {
        let b = Budget { warmup: 1, min_reps: 3, max_reps: 9, min_time: Duration::from_millis(10) };
        Settings {
            texts_path: "t.jsonl".into(),
            short_budget: b,
            long_budget: b,
            long_target: 512,
            long_tokens: vec![500, 510],
            peer_n_batch: None,
            elapsed: Duration::from_secs(3),
            about_peer: String::new(),
        }
    }

    #[test]
    fn csv_has_a_row_per_cell() {
        let pts = [point(Kind::Short, 2, 4, Column::Ours(Mode::Fine), 40.0), point(Kind::Long, 1, 1, Column::Peer, 2.0)];
        let text = csv(&pts);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("kind,threads,batch,mode"));
        assert!(lines[1].starts_with("short,2,4,fine,coarse,2,40.000,400.0,"));
        assert!(lines[2].starts_with("long,1,1,llama.cpp,"));
    }

    #[test]
    fn report_flags_auto_violations_and_crossover() {
        let mut pts = Vec::new();
        for (b, f, c, a) in [(1, 10.0, 6.0, 10.0), (8, 20.0, 25.0, 20.0), (32, 22.0, 30.0, 29.9)] {
            pts.push(point(Kind::Short, 2, b, Column::Ours(Mode::Fine), f));
            pts.push(point(Kind::Short, 2, b, Column::Ours(Mode::Coarse), c));
            pts.push(point(Kind::Short, 2, b, Column::Ours(Mode::Auto), a));
            pts.push(point(Kind::Short, 2, b, Column::Peer, 10.0));
        }
        let model = ModelInfo { path: "m.gguf".into(), size: 1, sha256: "00".into() };
        let md = markdown(&machine(), &model, &settings(), &pts, None, &[]);
        assert!(md.contains("AUTO CHECK FAILED at 1 of 3 points"), "{md}");
        // the fixture's auto always reports `coarse`, which is the best mode at batch 8
        assert!(md.contains("1 where auto picked the faster mode"), "{md}");
        assert!(md.contains("short texts, 2 threads, batch 8: auto ran coarse at 20.0 texts/s = 80.0 % of coarse"), "{md}");
        assert!(!md.contains("wrong mode picked"), "{md}");
        assert!(md.contains("crossover, short texts, 2 threads**: batch 8: coarse wins from here up"), "{md}");
        assert!(md.contains("vs llama.cpp, short texts, 2 threads** (ours auto ÷ llama.cpp texts/s): b1 1.00×, b8 2.00×, b32 2.99×"), "{md}");
        assert!(md.contains("| 8 | 20.0 | 25.0 | 20.0 | coarse | coarse | 22.3 % | 0.0 % | ⚠️ **80.0 %** | 10.0 | 2.00× |"), "{md}");

        let mut wrong = pts.clone();
        for p in wrong.iter_mut().filter(|p| p.batch == 8 && p.column == Column::Ours(Mode::Auto)) {
            p.runs.ran = BTreeMap::from([("fine".to_string(), 2)]);
        }
        let md = markdown(&machine(), &model, &settings(), &wrong, None, &[]);
        assert!(md.contains("1 with the wrong mode picked — the auto rule needs fixing"), "{md}");
        assert!(md.contains("batch 8: auto ran fine at 20.0 texts/s"), "{md}");

        let ok: Vec<Point> = pts.into_iter().filter(|p| p.batch != 8).collect();
        let md = markdown(&machine(), &model, &settings(), &ok, None, &[]);
        assert!(md.contains("auto check: PASS"), "{md}");
    }
}

