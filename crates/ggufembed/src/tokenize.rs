//! `ggufembed tokenize`: the ids (and pieces) the model would see.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::input::InputArgs;
use crate::output::Output;

/// Tokenize texts with the model's tokenizer, one JSON object per text.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: InputArgs,
    /// Also print each id's piece.
    #[arg(long)]
    pieces: bool,
    /// A GGUF model (default: EmbeddingGemma-300M Q8_0, fetched into the cache on first use).
    #[arg(long, short, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Write results to FILE (it appears only when complete) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let input = args.input.read()?;
    let mut out = Output::open(args.output.as_deref())?;
    let model = crate::model::resolve(args.model.as_deref())?;
    out.refuse_to_replace(&model, "model")?;
    let tokenizer = embed_runtime::load_tokenizer(&model)?;
    let mut ids = Vec::new();
    let mut line = String::new();
    input.for_each(|_, text| {
        tokenizer.encode_into(text, &mut ids);
        let mut obj = serde_json::json!({ "ids": ids });
        if args.pieces {
            let pieces: Vec<&str> = ids.iter().map(|&id| tokenizer.piece(id).unwrap_or("")).collect();
            obj["pieces"] = serde_json::json!(pieces);
        }
        line.clear();
        line.push_str(&obj.to_string());
        line.push('\n');
        Ok(out.write_all(line.as_bytes())?)
    })?;
    out.commit()
}
