//! `ggufembed embed`: texts in, vectors out (JSON Lines or `.npy`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use embed_runtime::{
    EmbedError, Embedder, Input, MATRYOSHKA_DIMS, MAX_THREADS_PER_CORE, NumericPath, Parallelism, Prepared, Prompt,
    TextError, Truncation,
};

use crate::input::{InputArgs, Texts};
use crate::output::{Output, npy_header};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per text: {"index", "embedding", "tokens", "truncated"}.
    Jsonl,
    /// A float32 matrix (texts × dims) in NumPy's .npy format.
    Npy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Chosen per batch from its size and lengths.
    Auto,
    /// Texts in parallel, serial matmuls.
    Coarse,
    /// One batch of texts at a time, matmuls split across threads.
    Fine,
}

/// Embed texts with EmbeddingGemma.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: InputArgs,
    /// Write results to FILE (it appears only when complete) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// A GGUF model (default: EmbeddingGemma-300M Q8_0, fetched into the cache on first use).
    #[arg(long, short, value_name = "PATH")]
    model: Option<PathBuf>,
    /// A prompt name from the model's configuration (query, document, STS, Clustering, ...).
    #[arg(long, value_name = "NAME", conflicts_with = "prefix", value_parser = parse_prompt)]
    prompt: Option<Prompt>,
    /// A custom prefix put in front of every text.
    #[arg(long, value_name = "TEXT")]
    prefix: Option<String>,
    /// Output dimension: 768, or a Matryoshka prefix of 512, 256 or 128.
    #[arg(long, default_value_t = 768, value_parser = parse_dims)]
    dims: usize,
    /// Scale a Matryoshka prefix back to unit length.
    #[arg(long)]
    renormalize: bool,
    /// Worker threads (default: all cores; at most 4 per core).
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// How texts are spread over the threads.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,
    /// Texts per embed call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Fail on a text longer than the model's context instead of truncating it.
    #[arg(long)]
    no_truncate: bool,
    /// Use the f32 reference arithmetic instead of quantized matmuls (slower; needs an F32/F16
    /// model for exact results).
    #[arg(long)]
    f32: bool,
    /// Report model load time and a throughput summary on standard error.
    #[arg(long, short)]
    verbose: bool,
}

/// `--prompt`: a malformed option like any other (status 2), named before anything is read.
fn parse_prompt(s: &str) -> Result<Prompt, String> {
    Prompt::named(s).ok_or_else(|| {
        let names: Vec<&str> = embed_runtime::NAMED_PROMPTS.iter().map(|(n, _)| *n).collect();
        format!("the model's prompts are {}", names.join(", "))
    })
}

/// `--dims`: checked before anything is read or loaded, so the message blames the option.
fn parse_dims(s: &str) -> Result<usize, String> {
    let sizes = MATRYOSHKA_DIMS.map(|d| d.to_string()).join(", ");
    match s.parse::<usize>() {
        Ok(n) if MATRYOSHKA_DIMS.contains(&n) => Ok(n),
        _ => Err(format!("the model's vector sizes are {sizes}")),
    }
}

/// `--threads`: at least 1, at most [`MAX_THREADS_PER_CORE`] per available core (more only
/// costs memory, and an absurd count would spawn threads until the process is killed).
fn parse_threads(s: &str) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cap = MAX_THREADS_PER_CORE * cores;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a number of threads".into());
    }
    match s.parse::<usize>() {
        Ok(0) => Err("at least 1 thread is needed".into()),
        Ok(n) if n <= cap => Ok(n),
        // Too many, or more than fits in a usize.
        _ => Err(format!("at most {cap} ({MAX_THREADS_PER_CORE} per core on this machine's {cores})")),
    }
}

pub fn run(args: Args) -> Result<()> {
    let input = args.input.read()?;
    let prompt = match (&args.prompt, &args.prefix) {
        (Some(named), _) => named.clone(),
        (None, Some(prefix)) => Prompt::Custom(prefix.clone()),
        (None, None) => Prompt::None,
    };
    if args.format == Format::Npy && args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("--format npy writes binary data; give --output FILE or redirect standard output");
    }
    // The output path is checked (and its temporary file made) before the model is even
    // looked for: a mistake there must not cost a model load or an hour of embedding.
    let mut out = Output::open(args.output.as_deref())?;
    let model = crate::model::resolve(args.model.as_deref())?;
    out.refuse_to_replace(&model, "model")?;

    let load_start = Instant::now();
    let mut builder = Embedder::builder()
        .model(&model)
        .prompt(prompt)
        .dims(args.dims)
        .renormalize(args.renormalize)
        .parallelism(match args.mode {
            Mode::Auto => Parallelism::Auto,
            Mode::Coarse => Parallelism::Coarse,
            Mode::Fine => Parallelism::Fine,
        })
        .truncation(if args.no_truncate { Truncation::Error } else { Truncation::Right })
        .numeric(if args.f32 { NumericPath::F32 } else { NumericPath::Quantized });
    if let Some(t) = args.threads {
        builder = builder.threads(t);
    }
    let embedder = builder.build()?;
    if args.verbose {
        eprintln!(
            "loaded {} in {:.2} s ({} threads, {:?} kernels)",
            model.display(),
            load_start.elapsed().as_secs_f64(),
            embedder.threads(),
            embedder.isa()
        );
    }

    // Every text is tokenized and checked before the first vector is written (tokenizing is
    // a thousandth of the work), so bad input never leaves half an output on standard output.
    // The ids are not kept: the second pass reads and tokenizes each batch again, so memory
    // stays one batch's whatever the size of the input.
    let options = embedder.options().clone();
    let no_truncate = args.no_truncate;
    let prepare = |i: usize, t: &str| {
        embedder.prepare(Input::Text(t), &options).map_err(|e| text_error(&input, i, &e, no_truncate))
    };
    input.for_each(|i, t| prepare(i, t).map(drop))?;

    if args.format == Format::Npy {
        out.write_all(&npy_header(input.len(), embedder.dim()))?;
    }
    let mut sink = Sink {
        out,
        format: args.format,
        bar: progress_bar(input.len()),
        // Never more than the texts: `--batch-size 4294967295` means "one batch", not 170 GB.
        batch: Vec::with_capacity((args.batch_size as usize).min(input.len())),
        first: 0,
        tokens: 0,
        line: String::new(),
    };
    let started = Instant::now();
    input.for_each(|i, t| {
        sink.batch.push(prepare(i, t)?);
        if sink.batch.len() == args.batch_size as usize {
            sink.flush(&embedder, &input, no_truncate)?;
        }
        Ok(())
    })?;
    sink.flush(&embedder, &input, no_truncate)?;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(bar) = sink.bar {
        bar.finish_and_clear();
    }
    sink.out.commit()?;
    if args.verbose {
        eprintln!(
            "{} text{}, {} tokens, {elapsed:.2} s, {:.1} texts/s",
            input.len(),
            if input.len() == 1 { "" } else { "s" },
            sink.tokens,
            input.len() as f64 / elapsed.max(1e-9)
        );
    }
    Ok(())
}

/// Where vectors go, one batch at a time.
struct Sink {
    out: Output,
    format: Format,
    bar: Option<indicatif::ProgressBar>,
    /// The texts of the batch being filled; the first is text `first`.
    batch: Vec<Prepared>,
    first: usize,
    tokens: usize,
    line: String,
}

impl Sink {
    /// Embeds and writes the batch, and starts an empty one.
    fn flush(&mut self, embedder: &Embedder, input: &Texts, no_truncate: bool) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let refs: Vec<&Prepared> = self.batch.iter().collect();
        let rows = embedder.embed_prepared(&refs).map_err(|e| match e {
            // Cannot happen after `prepare`; located all the same.
            EmbedError::Text { index, source } => text_error(input, self.first + index, &source, no_truncate),
            e => anyhow::Error::new(e),
        })?;
        for (i, (row, p)) in rows.iter().zip(&self.batch).enumerate() {
            self.tokens += p.tokens();
            match self.format {
                Format::Npy => {
                    for v in row {
                        self.out.write_all(&v.to_le_bytes())?;
                    }
                }
                Format::Jsonl => {
                    let line = &mut self.line;
                    line.clear();
                    line.push_str(&format!("{{\"index\":{},\"embedding\":", self.first + i));
                    line.push_str(&serde_json::to_string(row)?);
                    line.push_str(&format!(",\"tokens\":{},\"truncated\":{}}}\n", p.tokens(), p.truncated()));
                    self.out.write_all(line.as_bytes())?;
                }
            }
        }
        if let Some(bar) = &self.bar {
            bar.inc(self.batch.len() as u64);
        }
        self.first += self.batch.len();
        self.batch.clear();
        Ok(())
    }
}

/// One message for a text the model cannot take: where it is, then why.
fn text_error(input: &Texts, index: usize, e: &TextError, no_truncate: bool) -> anyhow::Error {
    let hint = match e {
        TextError::TooLong { .. } if no_truncate => " (drop --no-truncate to truncate it)",
        _ => "",
    };
    anyhow::anyhow!("{}: cannot embed this text: {e}{hint}", input.locate(index))
}

/// A bar on standard error for inputs big enough to be worth watching, when a person is.
fn progress_bar(n: usize) -> Option<indicatif::ProgressBar> {
    if n < 256 || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} embedding [{bar:40}] {pos}/{len} texts ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    Some(bar)
}
