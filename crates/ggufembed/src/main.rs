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
mod partial;
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
    /// Serve embeddings over HTTP (OpenAI's /v1/embeddings and text-embeddings-inference's /embed,
    /// /similarity, /tokenize, /decode, ...), requests batched together.
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
        // The reader went away (`| head`): stop quietly and successfully, as ripgrep does.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            if is_usage(&e) { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// Whether the failure is a usage error: status 2, as clap gives its own (no input; `serve`
/// options that the server's configuration refuses together).
fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<input::UsageError>() || matches!(c.downcast_ref::<embed_server::ServerError>(), Some(embed_server::ServerError::Config(_)))
    })
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let kind = c.downcast_ref::<std::io::Error>().map(std::io::Error::kind).or_else(|| {
            // serde_json keeps a failed write's io::Error to itself (its `source()` skips it).
            c.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind)
        });
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes joined by ": ", each said once. Library errors often both show
/// their source in their message and return it from `source()` (thiserror's `{source}` with
/// `#[source]`); printing the chain naively then repeats every cause.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        // A cause whose words are already on the line adds nothing.
        if msg.is_empty() || line.contains(&msg) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&msg);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load model m.gguf: {source}")]
    struct Outer {
        #[source]
        source: Inner,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading gguf: {0}")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::other("not a gguf file");
        let e = anyhow::Error::new(Outer { source: Inner(io) }).context("embedding");
        assert_eq!(one_line(&e), "embedding: cannot load model m.gguf: reading gguf: not a gguf file");
        // Causes that do not repeat themselves are all kept.
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(one_line(&e), "outer: middle: inner");
    }

    #[test]
    fn a_broken_pipe_is_recognised_through_context() {
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
