//! CPU sampling with pprof-rs, reduced to plain stacks so the tables are computed by tested pure
//! functions rather than by the profiler's own report code.
//!
//! pprof-rs samples on `SIGPROF` (CPU time, all threads) and unwinds with the `.eh_frame` tables
//! that every x86-64/aarch64 Linux binary carries, so release builds give real stacks without
//! frame pointers; `debug = "line-tables-only"` adds inlined frames and line numbers.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::Context;

use crate::stage::{Stage, classify_stack, qualified_name};

/// One distinct stack and how many samples hit it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Function names, innermost first, inlined functions expanded, profiler frames removed.
    pub frames: Vec<String>,
    /// Name of the sampled thread.
    pub thread: String,
    /// Samples.
    pub count: u64,
}

/// A running profiler; [`Capture::finish`] stops it and writes the flamegraph.
pub struct Capture {
    guard: pprof::ProfilerGuard<'static>,
}

/// What one profiled window produced.
pub struct Profile {
    /// Stacks with their sample counts.
    pub samples: Vec<Sample>,
}

impl Capture {
    /// Starts sampling every thread at `frequency` Hz of CPU time.
    pub fn start(frequency: i32) -> anyhow::Result<Self> {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(frequency)
            .build()
            .context("starting pprof")?;
        Ok(Capture { guard })
    }

    /// Stops sampling, writes `flamegraph.svg` to `svg`, and returns the stacks.
    pub fn finish(self, svg: &Path, title: &str) -> anyhow::Result<Profile> {
        let report = self.guard.report().build().context("building pprof report")?;
        drop(self.guard);
        let samples: Vec<Sample> = report
            .data
            .iter()
            .map(|(frames, &count)| {
                let symtab = crate::symtab::Symtab::get();
                let names: Vec<String> = frames
                    .frames
                    .iter()
                    .flat_map(|f| {
                        f.iter().enumerate().map(move |(i, s)| {
                            // The last symbol of a return address is the real (non-inlined)
                            // function: the symbol table has its full path.
                            if i + 1 == f.len() {
                                // pprof's addresses are link-time (the unwinder's "svma").
                                if let Some(name) = s.addr.and_then(|a| symtab?.lookup_svma(a as usize)) {
                                    return name.to_string();
                                }
                            }
                            let file = s.filename.as_ref().map(|p| p.to_string_lossy().into_owned());
                            qualified_name(strip_hash(&s.name()), file.as_deref())
                        })
                    })
                    .collect();
                Sample { frames: strip_profiler_frames(names), thread: frames.thread_name_or_id(), count: count.max(0) as u64 }
            })
            .collect();
        let file = File::create(svg).with_context(|| format!("creating {}", svg.display()))?;
        let mut options = pprof::flamegraph::Options::default();
        options.title = title.to_string();
        options.count_name = "samples".into();
        let lines = folded(&samples);
        if !lines.is_empty() {
            pprof::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), BufWriter::new(file))
                .context("writing flamegraph")?;
        }
        Ok(Profile { samples })
    }
}

/// Folded-stack lines (`thread;outer;...;inner count`) for the flamegraph, with module-qualified
/// names so inlined frames are recognisable.
pub fn folded(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| s.count > 0)
        .map(|s| {
            let mut line = s.thread.replace(';', ":");
            for f in s.frames.iter().rev() {
                line.push(';');
                line.push_str(&f.replace(';', ":"));
            }
            format!("{line} {}", s.count)
        })
        .collect()
}

/// Removes a legacy-mangling hash suffix (`::h0123456789abcdef`).
pub fn strip_hash(name: &str) -> &str {
    if let Some(pos) = name.rfind("::h") {
        let tail = &name[pos + 3..];
        if tail.len() == 16 && tail.bytes().all(|b| b.is_ascii_hexdigit()) {
            return &name[..pos];
        }
    }
    name
}

/// Drops the frames of the unwinder and the signal handler that sit innermost in every sample.
pub fn strip_profiler_frames(frames: Vec<String>) -> Vec<String> {
    let is_profiler = |n: &str| {
        n.starts_with("backtrace::")
            || n.starts_with("pprof::")
            || n.starts_with("<pprof::")
            || n.contains("perf_signal_handler")
            || n == "__restore_rt"
            || n.starts_with("_Unwind_")
    };
    match frames.iter().rposition(|n| is_profiler(n)) {
        // Only strip a profiler prefix: a profiler frame deep in the stack would mean pprof code
        // was itself being profiled, which does not happen, but then the stack is kept whole.
        Some(last) if frames[..=last].iter().all(|n| is_profiler(n) || !n.contains("::")) => frames[last + 1..].to_vec(),
        _ => frames,
    }
}

/// One row of a top-N table.
#[derive(Debug, Clone, PartialEq)]
pub struct FnRow {
    /// Function name.
    pub name: String,
    /// Samples with this function innermost.
    pub flat: u64,
    /// Samples with this function anywhere on the stack (counted once per sample).
    pub cum: u64,
}

/// Which column orders a top-N table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Self time, like `pprof -top`.
    Flat,
    /// Inclusive time, like `pprof -top -cum`.
    Cum,
}

/// The `n` functions with the most samples, and the total sample count. Ties are broken by name
/// so the table is deterministic.
pub fn top_functions(samples: &[Sample], n: usize, sort: SortBy) -> (Vec<FnRow>, u64) {
    let mut flat: HashMap<&str, u64> = HashMap::new();
    let mut cum: HashMap<&str, u64> = HashMap::new();
    let mut total = 0;
    for s in samples {
        total += s.count;
        if let Some(inner) = s.frames.first() {
            *flat.entry(inner).or_default() += s.count;
        } else {
            *flat.entry("[unknown]").or_default() += s.count;
            *cum.entry("[unknown]").or_default() += s.count;
        }
        let mut seen = HashSet::new();
        for f in &s.frames {
            if seen.insert(f.as_str()) {
                *cum.entry(f).or_default() += s.count;
            }
        }
    }
    let mut rows: Vec<FnRow> = cum
        .iter()
        .map(|(&name, &c)| FnRow { name: name.to_string(), flat: flat.get(name).copied().unwrap_or(0), cum: c })
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &FnRow| match sort {
            SortBy::Flat => (r.flat, r.cum),
            SortBy::Cum => (r.cum, r.flat),
        };
        key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name))
    });
    rows.truncate(n);
    (rows, total)
}

/// Samples charged to the innermost frame that is project code (kernels, model, tokenizer,
/// runtime), so time in inlined intrinsics and `core` helpers counts for the project function
/// they were inlined into. Samples without a project frame are grouped as `(no project frame)`.
pub fn top_project_functions(samples: &[Sample], n: usize) -> Vec<(String, u64)> {
    let mut by: HashMap<&str, u64> = HashMap::new();
    for s in samples {
        let name = s
            .frames
            .iter()
            .find(|f| crate::stage::classify_symbol(f).is_some())
            .map(String::as_str)
            .unwrap_or("(no project frame)");
        *by.entry(name).or_default() += s.count;
    }
    let mut v: Vec<(String, u64)> = by.into_iter().map(|(k, c)| (k.to_string(), c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Samples per stage (innermost project frame decides), in [`Stage::ALL`] order.
pub fn stage_samples(samples: &[Sample]) -> Vec<(Stage, u64)> {
    let mut by: HashMap<Stage, u64> = HashMap::new();
    for s in samples {
        *by.entry(classify_stack(s.frames.iter().map(String::as_str))).or_default() += s.count;
    }
    Stage::ALL.iter().map(|&st| (st, by.get(&st).copied().unwrap_or(0))).collect()
}

/// Samples per thread name, most first.
pub fn thread_samples(samples: &[Sample]) -> Vec<(String, u64)> {
    let mut by: HashMap<&str, u64> = HashMap::new();
    for s in samples {
        *by.entry(&s.thread).or_default() += s.count;
    }
    let mut v: Vec<(String, u64)> = by.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(frames: &[&str], count: u64) -> Sample {
        Sample { frames: frames.iter().map(|f| f.to_string()).collect(), thread: "main".into(), count }
    }

    #[test]
    fn folded_lines_run_outer_to_inner() {
        let mut a = s(&["inner", "mid", "outer"], 3);
        a.thread = "w;0".into();
        assert_eq!(folded(&[a, s(&["x"], 0)]), vec!["w:0;outer;mid;inner 3".to_string()]);
    }

    #[test]
    fn hashes_are_stripped_only_when_they_are_hashes() {
        assert_eq!(strip_hash("quant_kernels::gemm::run::h0123456789abcdef"), "quant_kernels::gemm::run");
        assert_eq!(strip_hash("a::hello"), "a::hello");
        assert_eq!(strip_hash("a::h0123"), "a::h0123");
    }

    #[test]
    fn profiler_prefix_is_removed() {
        let frames: Vec<String> = ["backtrace::backtrace::libunwind::trace", "backtrace::backtrace::trace_unsynchronized", "pprof::profiler::perf_signal_handler", "__restore_rt", "quant_kernels::dot", "main"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(strip_profiler_frames(frames), vec!["quant_kernels::dot".to_string(), "main".to_string()]);
        let plain: Vec<String> = vec!["a::b".into(), "main".into()];
        assert_eq!(strip_profiler_frames(plain.clone()), plain);
    }

    #[test]
    fn flat_counts_innermost_and_cum_counts_once_per_sample() {
        let samples = [
            s(&["dot", "gemm", "forward", "main"], 6),
            s(&["softmax", "attend", "forward", "main"], 3),
            // recursion: `split` twice on one stack must count once in cum
            s(&["dot", "split", "split", "gemm", "forward", "main"], 1),
        ];
        let (rows, total) = top_functions(&samples, 30, SortBy::Flat);
        assert_eq!(total, 10);
        assert_eq!(rows[0], FnRow { name: "dot".into(), flat: 7, cum: 7 });
        assert_eq!(rows[1], FnRow { name: "softmax".into(), flat: 3, cum: 3 });
        let split = rows.iter().find(|r| r.name == "split").unwrap();
        assert_eq!((split.flat, split.cum), (0, 1));
        let (by_cum, _) = top_functions(&samples, 2, SortBy::Cum);
        assert_eq!(by_cum.len(), 2);
        // forward and main both have cum 10; ties go alphabetical
        assert_eq!(by_cum[0].name, "forward");
        assert_eq!(by_cum[1].name, "main");
        assert_eq!(by_cum[0].cum, 10);
    }

    #[test]
    fn project_functions_absorb_inlined_helpers() {
        let samples = [
            s(&["core_arch::x86::avx512vnni::_mm512_dpbusd_epi32", "quant_kernels::x86_64::avx512::int8_vnni", "gemma_model::linear::forward"], 5),
            s(&["quant_kernels::x86_64::avx512::int8_vnni", "gemma_model::linear::forward"], 2),
            s(&["gemma_model::norm::rms_norm_add", "gemma_model::forward::layer_forward"], 3),
            s(&["rayon_core::sleep::Sleep::sleep"], 1),
        ];
        assert_eq!(
            top_project_functions(&samples, 10),
            vec![
                ("quant_kernels::x86_64::avx512::int8_vnni".to_string(), 7),
                ("gemma_model::norm::rms_norm_add".to_string(), 3),
                ("(no project frame)".to_string(), 1),
            ]
        );
        assert_eq!(top_project_functions(&samples, 1).len(), 1);
    }

    #[test]
    fn stages_and_threads_are_tallied() {
        let mut a = s(&["quant_kernels::x86_64::avx512::dot_q8_0_q8_0", "gemma_model::forward::run"], 5);
        a.thread = "w0".into();
        let b = s(&["gemma_model::attention::attend", "embed_runtime::Embedder::embed"], 2);
        let c = s(&["rayon_core::sleep::Sleep::sleep"], 1);
        let st = stage_samples(&[a.clone(), b.clone(), c.clone()]);
        let get = |x: Stage| st.iter().find(|(s, _)| *s == x).unwrap().1;
        assert_eq!(get(Stage::Matmul), 5);
        assert_eq!(get(Stage::Attention), 2);
        assert_eq!(get(Stage::Scheduler), 1);
        assert_eq!(st.iter().map(|x| x.1).sum::<u64>(), 8);
        assert_eq!(thread_samples(&[a, b, c]), vec![("w0".to_string(), 5), ("main".to_string(), 3)]);
    }
}
