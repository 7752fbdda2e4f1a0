//! The ggufembed command-line tool.
//!
//! One module per subcommand, each exposing `Args` (its clap arguments) and
//! `run(Args) -> anyhow::Result<()>`; adding a subcommand is one variant of [`Command`] and
//! one arm in [`main`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod convert;
mod embed;
mod fetch;
mod input;
mod inspect;
mod model;
mod output;
mod progress;
mod serve;
mod tokenize;

/// Text embeddings with EmbeddingGemma, from GGUF, in pure Rust.
#[derive(Debug, Parser)]
#[command(name = "ggufembed", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embed texts (arguments, a file or standard input) with EmbeddingGemma.
    Embed(embed::Args),
    /// Print the token ids (and pieces) of texts.
    Tokenize(tokenize::Args),
    /// Print a GGUF file's header, metadata and tensor table.
    Inspect(inspect::Args),
    /// Download, verify and convert the default model into the cache; print the GGUF's path.
    Fetch(fetch::Args),
    /// Convert a sentence-transformers EmbeddingGemma folder to GGUF.
    Convert(convert::Args),
    /// Serve embeddings over HTTP (OpenAI and text-embeddings-inference APIs).
    Serve(serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined by ": ".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
