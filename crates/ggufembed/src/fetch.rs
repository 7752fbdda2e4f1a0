//! `ggufembed fetch [--type q8_0|q8_0-f16emb|q4_k_m|f32|f16|bf16]`: make sure the default model is in the cache
//! (download, verify, extract, convert) and print the GGUF's path. A second run downloads
//! nothing: cached files are checked against their manifests.

use std::io::Write;

use model_fetch::{Check, ModelStore, OutType};

use crate::progress::Bars;

/// Arguments of `fetch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output type of the GGUF.
    #[arg(long = "type", default_value = "q8_0", value_parser = parse_out_type)]
    out_type: OutType,
    /// Re-hash cached files instead of comparing sizes (and fetch again whatever is corrupt).
    #[arg(long)]
    verify: bool,
    /// Only fetch the verified sentence-transformers folder and print its path.
    #[arg(long)]
    source_only: bool,
    /// Print each stage's duration.
    #[arg(long)]
    timings: bool,
}

/// Parses one of [`OutType::ALL`]'s names.
pub fn parse_out_type(s: &str) -> Result<OutType, String> {
    OutType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = OutType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown type {s:?}; expected one of {}", names.join(", "))
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let store = ModelStore::open_default()?;
    let bars = Bars::new(args.timings);
    let check = if args.verify { Check::Full } else { Check::Cheap };
    let started = std::time::Instant::now();
    let path = if args.source_only {
        store.ensure_source_with(check, &bars)?
    } else {
        store.ensure_gguf_with(args.out_type, check, &bars)?
    };
    if args.timings {
        eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    }
    anyhow::Context::context(writeln!(std::io::stdout().lock(), "{}", path.display()), "cannot write to standard output")?;
    Ok(())
}
