//! `ggufembed convert SRC_DIR OUT.gguf --type q8_0|q8_0-f16emb|q4_k_m|f32|f16|bf16`: convert a sentence-transformers
//! EmbeddingGemma folder into the GGUF llama.cpp's converter writes for it.

use std::path::PathBuf;

use std::io::Write;

use anyhow::Context;
use gemma_convert::{ConvertOptions, OutType};
use indicatif::{ProgressBar, ProgressStyle};

use crate::fetch::parse_out_type;
use crate::output::Output;

/// Arguments of `convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sentence-transformers folder (model.safetensors, tokenizer.model, config.json, ...).
    src_dir: PathBuf,
    /// The GGUF to write (a file appears only when complete; a FIFO or device is written in place).
    out: PathBuf,
    /// Output type.
    #[arg(long = "type", default_value = "q8_0", value_parser = parse_out_type)]
    out_type: OutType,
    /// Model id for general.name / basename / size_label (default: the folder's name, as llama.cpp).
    #[arg(long)]
    model_id: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // The output is checked (and its temporary file made) before hours of conversion.
    let mut out = Output::open(Some(&args.out))?;
    let bar = ProgressBar::new(0).with_message("converting");
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    let options = ConvertOptions { model_id: args.model_id.clone() };
    let mut on_progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let report = gemma_convert::convert_to_writer(&args.src_dir, &mut out, &args.out, args.out_type, &options, &mut on_progress)
        .with_context(|| format!("converting {} to {}", args.src_dir.display(), args.out.display()))?;
    out.commit()?;
    bar.finish_and_clear();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{}: {} tensors, {} metadata keys, {} tokens, {} bytes ({})",
        report.out_path.display(),
        report.tensor_count,
        report.kv_count,
        report.vocab_size,
        report.file_size,
        report.out_type
    )?;
    Ok(())
}
