//! `cargo xtask`: the project's performance reports, one module per subcommand.
//!
//! - `cargo xtask profile`: a fixed workload per parallelism mode under a CPU profiler and a
//!   counting allocator; flamegraphs, top-30 tables, stage breakdowns, QUICK_COMPARISON.md.
//! - `cargo xtask bench-matrix`: batch size × mode × threads on short and long texts, optionally
//!   beside llama.cpp; CSV, MATRIX.md with the crossover and the auto check, SVG plots.
//! - `cargo xtask bench-serve`: `ggufembed serve` under closed-loop load beside the library's own
//!   batch-1/batch-32 rates and llama-server; SERVE.md, CSV and an SVG plot.
//! - `cargo xtask limits`: the runtime beside this machine's limits (memory bandwidth and the
//!   batch-1 floor it sets, AVX2 against the best ISA at batch 32, peak RSS); LIMITS.md.
//! - `cargo xtask test`: the whole test suite, `cargo test --workspace` then the Python package's
//!   pytest suites in a virtual environment it makes (see `test.rs`).
//!
//! Everything lands under `profiles/<date>-<host>-<isa>/` with the CPU, compiler, commit and
//! model hash written beside the numbers.
#![forbid(unsafe_code)]

mod alloc_track;
mod analysis;
mod bench_matrix;
mod bench_serve;
mod cpu_profile;
mod engine;
mod libllama;
mod limits;
mod machine;
mod measure;
mod peer;
mod plot;
mod profile;
mod render;
mod runtime;
mod stage;
mod stats;
mod symtab;
mod test;
mod workload;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// Counts every allocation; see `alloc_track`. The wrapper is the `tracking-allocator` crate's,
/// so xtask itself needs no `unsafe`.
#[global_allocator]
static GLOBAL: tracking_allocator::Allocator<std::alloc::System> = tracking_allocator::Allocator::system();

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Performance reports for the ggufembed workspace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Profile fine, coarse and auto parallelism on one workload (flamegraphs, top-30, allocations).
    Profile(profile::ProfileArgs),
    /// Throughput/latency matrix over batch sizes, modes and thread counts.
    BenchMatrix(bench_matrix::BenchArgs),
    /// The whole test suite: cargo test --workspace, then the Python package's pytest suites.
    Test(test::TestArgs),
    /// `ggufembed serve` under closed-loop load (1-128 clients), beside the library and llama-server.
    BenchServe(bench_serve::ServeArgs),
    /// The runtime beside this machine's limits: memory bandwidth and the batch-1 floor it sets,
    /// batch 32 on AVX2 against the best ISA, peak RSS against the GGUF's size.
    Limits(limits::LimitsArgs),
}

/// The workspace root (xtask's parent folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> anyhow::Result<()> {
    alloc_track::install();
    let cli = Cli::parse();
    match cli.command {
        Command::Test(args) => test::run(&args, &workspace_root())?,
        Command::Profile(args) => {
            let model = runtime::resolve_model(args.inputs.model.as_deref())?;
            profile::run(&args, &model, &|t| runtime::open(&model, t))?;
        }
        Command::BenchMatrix(args) => {
            let model = runtime::resolve_model(args.inputs.model.as_deref())?;
            bench_matrix::run_repeated(&args, &model, &|t| runtime::open(&model, t))?;
        }
        Command::BenchServe(args) => {
            let model = runtime::resolve_model(args.inputs.model.as_deref())?;
            bench_serve::run(&args, &model)?;
        }
        Command::Limits(args) => {
            let model = runtime::resolve_model(args.inputs.model.as_deref())?;
            limits::run(&args, &model)?;
        }
    }
    Ok(())
}
