//! `cargo xtask profile`: one fixed workload per parallelism mode under a CPU profiler and a
//! counting allocator, and a side-by-side summary like the seeds' QUICK_COMPARISON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::alloc_track::{self, Snapshot};
use crate::cpu_profile::{self, Capture, SortBy};
use crate::engine::{Engine, Mode};
use crate::machine::{self, Machine, ModelInfo};
use crate::render::{Table, bytes, pct, sig3};
use crate::stage::{Stage, classify_stack};
use crate::workload::window;

/// Options of `cargo xtask profile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArgs {
    /// Texts per `embed` call.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Texts embedded per mode in the measured window (rounded up to whole batches).
    #[arg(long, default_value_t = 256)]
    pub count: usize,
    /// Worker threads (default: every available core).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub inputs: crate::workload::Inputs,
    /// Modes to profile, in order.
    #[arg(long, default_value = "fine,coarse,auto")]
    pub modes: String,
    /// Sampling frequency of the CPU profiler (Hz of CPU time per thread).
    #[arg(long, default_value_t = 499)]
    pub frequency: i32,
}

/// Everything measured for one mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// Mode asked for.
    pub mode: String,
    /// Mode(s) that ran (what `auto` picked).
    pub ran: String,
    /// Batches in the measured window.
    pub batches: usize,
    /// Texts in the measured window.
    pub texts: usize,
    /// Tokens in the measured window.
    pub tokens: usize,
    /// Wall time of the measured window, seconds.
    pub wall_s: f64,
    /// Process CPU time of the measured window, seconds.
    pub cpu_s: f64,
    /// Threads in the process while embedding.
    pub process_threads: usize,
    /// Worker threads of the embedder.
    pub worker_threads: usize,
    /// Allocations in the measured window.
    pub alloc_count: u64,
    /// Bytes allocated in the measured window.
    pub alloc_bytes: u64,
    /// Allocations by stage from the attribution pass: (stage, count, bytes).
    pub alloc_stages: Vec<(String, u64, u64)>,
    /// Allocations counted by the attribution pass (same batches, site capture on).
    pub attributed_count: u64,
    /// Biggest allocation sites: (innermost project function, count, bytes).
    pub alloc_sites: Vec<(String, u64, u64)>,
    /// CPU samples by stage.
    pub cpu_stages: Vec<(String, u64)>,
    /// CPU samples in total.
    pub cpu_samples: u64,
    /// Top functions by self samples: (name, self, cumulative).
    pub top_flat: Vec<(String, u64, u64)>,
    /// Top functions by cumulative samples.
    pub top_cum: Vec<(String, u64, u64)>,
    /// Top project functions (innermost project frame of each sample).
    pub top_project: Vec<(String, u64)>,
    /// Samples per thread name.
    pub threads_sampled: Vec<(String, u64)>,
    /// Peak resident set size after this mode, bytes.
    pub peak_rss: u64,
}

impl ModeReport {
    fn texts_per_s(&self) -> f64 {
        self.texts as f64 / self.wall_s
    }
}

/// Runs the command. `open` builds an engine with the given thread count.
pub fn run(args: &ProfileArgs, model: &Path, open: &dyn Fn(usize) -> anyhow::Result<Box<dyn Engine>>) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let mut machine = Machine::detect();
    let model_info = ModelInfo::of(model)?;
    let texts_path = args.inputs.texts_path();
    let pool = crate::workload::load_sentences(&texts_path)?;
    let threads = args.threads.unwrap_or(machine.cores).max(1);
    let modes = crate::engine::parse_modes(&args.modes).map_err(anyhow::Error::msg)?;
    let engine = open(threads)?;
    machine.isa = engine.isa();
    let batch = args.batch.max(1);
    let batches = args.count.max(1).div_ceil(batch);
    let out = args.inputs.out_dir(&machine, "profile");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    eprintln!(
        "profile: {} modes × {batches} batches of {batch} texts, {threads} threads, model {}",
        args.modes.split(',').count(),
        model.display()
    );

    let mut reports = Vec::new();
    for &mode in &modes {
        let dir = out.join(mode.name());
        fs::create_dir_all(&dir)?;
        let r = profile_mode(engine.as_ref(), &pool, batch, batches, mode, args.frequency, &dir)?;
        eprintln!(
            "  {mode:>6}: {:.1} texts/s, wall {:.2} s, CPU {:.2} s, {} allocations ({}), ran {}",
            r.texts_per_s(),
            r.wall_s,
            r.cpu_s,
            r.alloc_count,
            bytes(r.alloc_bytes),
            r.ran
        );
        fs::write(dir.join("top30.md"), top_markdown(&r))?;
        fs::write(dir.join("report.json"), serde_json::to_string_pretty(&r)?)?;
        reports.push(r);
    }
    let settings = format!(
        "batch {batch}, {batches} batches = {} texts per mode (STS-B en-dev sentences from {}, consecutive windows), \
         {threads} worker threads, one untimed warm-up batch per mode, pprof at {} Hz",
        batches * batch,
        texts_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        args.frequency
    );
    let summary = summary_markdown(&machine, &model_info, &settings, &reports);
    fs::write(out.join("QUICK_COMPARISON.md"), summary)?;
    eprintln!("profile: wrote {} in {:.0} s", out.display(), started.elapsed().as_secs_f64());
    Ok(out)
}

fn profile_mode(
    engine: &dyn Engine,
    pool: &[String],
    batch: usize,
    batches: usize,
    mode: Mode,
    frequency: i32,
    dir: &Path,
) -> anyhow::Result<ModeReport> {
    // Warm-up: weights paged in, scratch buffers sized, before anything is measured.
    engine.embed(&window(pool, batch, 0), mode)?;

    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    let mut tokens = 0;
    let mut process_threads = 0;
    let capture = Capture::start(frequency)?;
    let a0 = Snapshot::now();
    let c0 = machine::cpu_seconds();
    let t0 = Instant::now();
    for k in 0..batches {
        tokens += engine.embed(&window(pool, batch, 1 + k), mode)?;
        if k == 0 {
            process_threads = machine::thread_count().unwrap_or(0);
        }
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = machine::cpu_seconds() - c0;
    let allocs = Snapshot::now().since(a0);
    let profile = capture.finish(&dir.join("flamegraph.svg"), &format!("{mode} mode, batch {batch}"))?;
    fs::write(dir.join("stacks.folded"), cpu_profile::folded(&profile.samples).join("\n") + "\n")?;
    for k in 0..batches {
        *ran.entry(engine.resolve(&window(pool, batch, 1 + k), mode).name().to_string()).or_default() += 1;
    }

    // Attribution pass: the same batches again with site capture on. Kept apart from the timed
    // window because capturing a stack per allocation costs time.
    alloc_track::start_capture();
    for k in 0..batches {
        engine.embed(&window(pool, batch, 1 + k), mode)?;
    }
    let sites = alloc_track::stop_capture();
    let (alloc_stages, alloc_sites) = attribute(&sites);

    let (flat, _) = cpu_profile::top_functions(&profile.samples, 30, SortBy::Flat);
    let (cum, total) = cpu_profile::top_functions(&profile.samples, 30, SortBy::Cum);
    let ran = if ran.len() == 1 {
        ran.keys().next().cloned().unwrap_or_default()
    } else {
        ran.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join("/")
    };
    Ok(ModeReport {
        mode: mode.name().into(),
        ran,
        batches,
        texts: batches * batch,
        tokens,
        wall_s,
        cpu_s,
        process_threads,
        worker_threads: engine.threads(),
        alloc_count: allocs.count,
        alloc_bytes: allocs.bytes,
        attributed_count: sites.len() as u64,
        alloc_stages,
        alloc_sites,
        cpu_stages: cpu_profile::stage_samples(&profile.samples).into_iter().map(|(s, n)| (s.label().to_string(), n)).collect(),
        cpu_samples: total,
        top_flat: flat.into_iter().map(|r| (r.name, r.flat, r.cum)).collect(),
        top_cum: cum.into_iter().map(|r| (r.name, r.flat, r.cum)).collect(),
        top_project: cpu_profile::top_project_functions(&profile.samples, 30),
        threads_sampled: cpu_profile::thread_samples(&profile.samples),
        peak_rss: machine::peak_rss_bytes().unwrap_or(0),
    })
}

/// A name with an allocation count and byte total.
pub type Tally = (String, u64, u64);

/// A summary-table row: its label and how to compute a mode's cell.
type Row = (&'static str, Box<dyn Fn(&ModeReport) -> String>);

/// Allocation count and bytes per stage, and the ten biggest sites by bytes, named by the
/// innermost project function (or the innermost non-allocator frame when none is ours).
pub fn attribute(sites: &[alloc_track::Site]) -> (Vec<Tally>, Vec<Tally>) {
    let mut by_stage: BTreeMap<Stage, (u64, u64)> = BTreeMap::new();
    let mut by_site: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for s in sites {
        let stage = classify_stack(s.frames.iter().map(String::as_str));
        let e = by_stage.entry(stage).or_default();
        e.0 += 1;
        e.1 += s.bytes;
        let name = site_name(&s.frames);
        let e = by_site.entry(name).or_default();
        e.0 += 1;
        e.1 += s.bytes;
    }
    let stages = Stage::ALL
        .iter()
        .map(|st| {
            let (c, b) = by_stage.get(st).copied().unwrap_or_default();
            (st.label().to_string(), c, b)
        })
        .collect();
    let mut top: Vec<Tally> = by_site.into_iter().map(|(k, (c, b))| (k, c, b)).collect();
    top.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then_with(|| a.0.cmp(&b.0)));
    top.truncate(10);
    (stages, top)
}

/// The function charged with an allocation in the sites table.
pub fn site_name(frames: &[String]) -> String {
    if let Some(f) = frames.iter().find(|f| crate::stage::classify_symbol(f).is_some()) {
        return f.clone();
    }
    let plumbing = |f: &str| {
        let p = crate::stage::code_path(f);
        ["alloc::", "core::", "std::", "backtrace::", "tracking_allocator::", "xtask::alloc_track", "__rust", "__rdl", "hashbrown::"]
            .iter()
            .any(|pre| p.starts_with(pre))
            || p.starts_with("<alloc")
            || p.starts_with("<std")
            || !p.contains("::")
    };
    frames.iter().find(|f| !plumbing(f)).cloned().unwrap_or_else(|| "[allocator internals]".into())
}

fn top_markdown(r: &ModeReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {} mode: top 30 functions\n", r.mode);
    let _ = writeln!(
        s,
        "{} CPU samples over {:.2} s wall / {:.2} s CPU. *Self* = samples with the function innermost; \
         *cumulative* = samples with it anywhere on the stack (inlined functions count as frames).\n",
        r.cpu_samples, r.wall_s, r.cpu_s
    );
    let _ = writeln!(
        s,
        "## By project function\n\nEach sample charged to its innermost frame in a project crate, so intrinsics and \
         `core` helpers inlined into a kernel count for that kernel.\n"
    );
    let mut t = Table::new(&[">#", "function", ">samples", ">%"]);
    for (i, (name, n)) in r.top_project.iter().enumerate() {
        t.row([(i + 1).to_string(), format!("`{name}`"), n.to_string(), pct(*n as f64 / r.cpu_samples.max(1) as f64)]);
    }
    s.push_str(&t.to_markdown());
    s.push('\n');
    for (title, rows) in [("By self time", &r.top_flat), ("By cumulative time", &r.top_cum)] {
        let _ = writeln!(s, "## {title}\n");
        let mut t = Table::new(&[">#", "function", ">self", ">self %", ">cum", ">cum %"]);
        for (i, (name, flat, cum)) in rows.iter().enumerate() {
            t.row([
                (i + 1).to_string(),
                format!("`{name}`"),
                flat.to_string(),
                pct(*flat as f64 / r.cpu_samples.max(1) as f64),
                cum.to_string(),
                pct(*cum as f64 / r.cpu_samples.max(1) as f64),
            ]);
        }
        s.push_str(&t.to_markdown());
        s.push('\n');
    }
    s
}

/// The QUICK_COMPARISON.md text.
pub fn summary_markdown(machine: &Machine, model: &ModelInfo, settings: &str, reports: &[ModeReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Quick profile comparison: fine vs coarse vs auto\n");
    s.push_str(&machine.markdown(model));
    let _ = writeln!(s, "- **workload**: {settings}\n");
    let _ = writeln!(s, "Regenerate with `cargo xtask profile` (see `profiles/README.md`). Per mode: `<mode>/flamegraph.svg`, `<mode>/top30.md`, `<mode>/report.json`, `<mode>/stacks.folded` (folded stacks for other flamegraph tools).\n");

    // Headline
    let fixed: Vec<&ModeReport> = reports.iter().filter(|r| r.mode != "auto").collect();
    if fixed.len() == 2 {
        let (a, b) = (fixed[0], fixed[1]);
        let (win, lose) = if a.texts_per_s() >= b.texts_per_s() { (a, b) } else { (b, a) };
        let _ = writeln!(
            s,
            "**Winner at this batch size: {}**, {:.2}× the throughput of {} ({} vs {} texts/s).",
            win.mode,
            win.texts_per_s() / lose.texts_per_s(),
            lose.mode,
            sig3(win.texts_per_s()),
            sig3(lose.texts_per_s())
        );
        if let Some(auto) = reports.iter().find(|r| r.mode == "auto") {
            let _ = writeln!(
                s,
                " `auto` ran {} and reached {} of the winner.",
                auto.ran,
                pct(auto.texts_per_s() / win.texts_per_s())
            );
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Performance summary\n");
    let mut header = vec!["metric".to_string()];
    header.extend(reports.iter().map(|r| format!(">{}", r.mode)));
    let mut t = Table::new(&header);
    let rows: Vec<Row> = vec![
        ("mode that ran", Box::new(|r| r.ran.clone())),
        ("wall time", Box::new(|r| format!("{:.2} s", r.wall_s))),
        ("time per batch", Box::new(|r| format!("{} ms", sig3(r.wall_s * 1e3 / r.batches as f64)))),
        ("time per text", Box::new(|r| format!("{} ms", sig3(r.wall_s * 1e3 / r.texts as f64)))),
        ("**throughput**", Box::new(|r| format!("**{} texts/s**", sig3(r.texts_per_s())))),
        ("tokens/s", Box::new(|r| sig3(r.tokens as f64 / r.wall_s))),
        ("CPU time", Box::new(|r| format!("{:.2} s", r.cpu_s))),
        ("CPU utilisation", Box::new(|r| format!("{:.0} % ({} of {} workers)", r.cpu_s / r.wall_s * 100.0, pct(r.cpu_s / r.wall_s / r.worker_threads as f64), r.worker_threads))),
        ("threads in process", Box::new(|r| r.process_threads.to_string())),
        ("allocations", Box::new(|r| format!("{} ({} per batch)", r.alloc_count, sig3(r.alloc_count as f64 / r.batches as f64)))),
        ("bytes allocated", Box::new(|r| format!("{} ({} per text)", bytes(r.alloc_bytes), bytes(r.alloc_bytes / r.texts.max(1) as u64)))),
        ("peak RSS (process so far)", Box::new(|r| bytes(r.peak_rss))),
    ];
    for (name, f) in &rows {
        let mut row = vec![name.to_string()];
        row.extend(reports.iter().map(f));
        t.row(row);
    }
    s.push_str(&t.to_markdown());

    let _ = writeln!(s, "\n## Where the CPU time went (share of CPU samples by stage)\n");
    let _ = writeln!(
        s,
        "Each sample is charged to the innermost frame that belongs to a project crate; samples with only \
         thread-pool frames are *scheduler* (idle spinning, stealing, waking), the rest *other*.\n"
    );
    let mut t = Table::new(&header_with(reports, "stage"));
    for st in Stage::ALL {
        let mut row = vec![st.label().to_string()];
        for r in reports {
            let n = r.cpu_stages.iter().find(|(l, _)| l == st.label()).map(|x| x.1).unwrap_or(0);
            row.push(format!("{} ({})", pct(n as f64 / r.cpu_samples.max(1) as f64), sig3(n as f64 / r.cpu_samples.max(1) as f64 * r.cpu_s) + " s"));
        }
        t.row(row);
    }
    s.push_str(&t.to_markdown());

    let _ = writeln!(s, "\n## Allocations by stage (attribution pass over the same batches)\n");
    let mut t = Table::new(&header_with(reports, "stage"));
    for st in Stage::ALL {
        let mut row = vec![st.label().to_string()];
        for r in reports {
            let (c, b) = r.alloc_stages.iter().find(|(l, _, _)| l == st.label()).map(|x| (x.1, x.2)).unwrap_or((0, 0));
            row.push(format!("{c} / {}", bytes(b)));
        }
        t.row(row);
    }
    let mut total_row = vec!["**total** (count / bytes)".to_string()];
    for r in reports {
        total_row.push(format!("{} / {}", r.attributed_count, bytes(r.alloc_stages.iter().map(|x| x.2).sum())));
    }
    t.row(total_row);
    s.push_str(&t.to_markdown());
    let _ = writeln!(
        s,
        "\nThe timed window counted {} allocations; the attribution pass, which captures a stack per \
         allocation, counted the totals above (they differ only if the runtime's allocations depend on timing).\n",
        reports.iter().map(|r| format!("{} ({})", r.alloc_count, r.mode)).collect::<Vec<_>>().join(", ")
    );
    for r in reports {
        if r.alloc_sites.is_empty() {
            continue;
        }
        let _ = writeln!(s, "Biggest allocation sites, {} mode:\n", r.mode);
        let mut t = Table::new(&["function", ">allocations", ">bytes"]);
        for (name, c, b) in &r.alloc_sites {
            t.row([format!("`{name}`"), c.to_string(), bytes(*b)]);
        }
        s.push_str(&t.to_markdown());
        s.push('\n');
    }

    let _ = writeln!(s, "## Top 10 project functions (side by side)\n");
    let _ = writeln!(s, "Share of CPU samples whose innermost project frame is the function (inlined intrinsics count for their caller); full tables in `<mode>/top30.md`.\n");
    let mut t = Table::new(&header_with(reports, ">#"));
    for i in 0..10 {
        let mut row = vec![(i + 1).to_string()];
        for r in reports {
            row.push(
                r.top_project
                    .get(i)
                    .map(|(n, c)| format!("`{}` {}", short_name(n), pct(*c as f64 / r.cpu_samples.max(1) as f64)))
                    .unwrap_or_default(),
            );
        }
        t.row(row);
    }
    s.push_str(&t.to_markdown());

    let _ = writeln!(s, "\n## CPU samples per thread\n");
    for r in reports {
        let list: Vec<String> = r.threads_sampled.iter().map(|(n, c)| format!("{n} {}", pct(*c as f64 / r.cpu_samples.max(1) as f64))).collect();
        let _ = writeln!(s, "- {}: {}", r.mode, list.join(", "));
    }
    s
}

fn header_with(reports: &[ModeReport], first: &str) -> Vec<String> {
    let mut h = vec![first.to_string()];
    h.extend(reports.iter().map(|r| r.mode.clone()));
    h
}

/// Drops the leading module path for the side-by-side table (`a::b::C::f` becomes `C::f`).
pub fn short_name(name: &str) -> String {
    let base = name.split('<').next().unwrap_or(name);
    let parts: Vec<&str> = base.split("::").filter(|p| !p.is_empty()).collect();
    let keep = if parts.last().is_some_and(|p| p.starts_with('{')) { 3 } else { 2 };
    let tail = parts.len().saturating_sub(keep);
    let short = parts[tail..].join("::");
    if short.is_empty() { name.to_string() } else { short }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(frames: &[&str], bytes: u64) -> alloc_track::Site {
        alloc_track::Site { frames: frames.iter().map(|s| s.to_string()).collect(), bytes }
    }

    #[test]
    fn allocations_are_grouped_by_stage_and_site() {
        let sites = [
            site(&["alloc::alloc::alloc", "bpe_tokenizer::bpe::encode", "embed_runtime::Embedder::embed"], 100),
            site(&["alloc::alloc::alloc", "bpe_tokenizer::bpe::encode", "embed_runtime::Embedder::embed"], 50),
            site(&["alloc::raw_vec::RawVec<T>::grow", "quant_kernels::scalar::quant::quantize_row_q8_0"], 4000),
            site(&["alloc::alloc::alloc", "xtask::profile::run"], 8),
        ];
        let (stages, top) = attribute(&sites);
        let get = |l: &str| stages.iter().find(|x| x.0 == l).map(|x| (x.1, x.2)).unwrap();
        assert_eq!(get("tokenize"), (2, 150));
        assert_eq!(get("quantize activations"), (1, 4000));
        assert_eq!(get("other"), (1, 8));
        assert_eq!(stages.len(), Stage::ALL.len());
        assert_eq!(top[0], ("quant_kernels::scalar::quant::quantize_row_q8_0".to_string(), 1, 4000));
        assert_eq!(top[1], ("bpe_tokenizer::bpe::encode".to_string(), 2, 150));
        assert_eq!(top[2], ("xtask::profile::run".to_string(), 1, 8));
    }

    #[test]
    fn short_names_keep_type_and_function() {
        assert_eq!(short_name("quant_kernels::x86_64::avx512::dot_q8_0_q8_0"), "avx512::dot_q8_0_q8_0");
        assert_eq!(short_name("gemma_model::attention::attend::{{closure}}"), "attention::attend::{{closure}}");
        assert_eq!(short_name("memcpy"), "memcpy");
    }
}
