//! `ggufembed inspect FILE.gguf`: what a GGUF file holds, as text or one JSON document.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;
use gguf_format::{Array, GgufError, GgufFile, TensorView, Value};
use serde_json::{Value as Json, json};

/// Arrays are shown as their length and this many leading elements unless `--full-arrays`.
const ARRAY_PREVIEW: usize = 5;

/// Arguments of `inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF file.
    file: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Print every array element instead of the first few.
    #[arg(long)]
    full_arrays: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::model::check_file(&args.file, "file")?;
    let file = GgufFile::open(&args.file).map_err(|e| match e {
        // Already names the file.
        e @ GgufError::Io { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(args.file.display().to_string()),
    })?;
    let preview = if args.full_arrays {
        usize::MAX
    } else {
        ARRAY_PREVIEW
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written: anyhow::Result<()> = if args.json {
        let doc = to_json(&args, &file, preview);
        serde_json::to_writer_pretty(&mut out, &doc)
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(writeln!(out)?))
    } else {
        write_text(&mut out, &args, &file, preview).map_err(anyhow::Error::from)
    };
    // A full disk or a closed pipe says where (the pipe then ends the run quietly in main).
    written.and_then(|()| Ok(out.flush()?)).context("cannot write to standard output")
}

fn type_name(v: &Value<'_>) -> String {
    match v {
        Value::Array(a) => format!("ARRAY[{}]", a.elem_type()),
        other => other.value_type().to_string(),
    }
}

fn histogram(file: &GgufFile) -> BTreeMap<&'static str, usize> {
    let mut h = BTreeMap::new();
    for t in file.tensors() {
        *h.entry(t.ggml_type.name()).or_default() += 1;
    }
    h
}

fn relative_offset(file: &GgufFile, t: &TensorView<'_>) -> u64 {
    t.offset - file.data_offset()
}

fn write_text(
    out: &mut impl Write,
    args: &Args,
    file: &GgufFile,
    preview: usize,
) -> io::Result<()> {
    writeln!(out, "file: {}", args.file.display())?;
    writeln!(out, "file size: {} bytes", file.bytes().len())?;
    writeln!(out, "gguf version: {}", file.version())?;
    writeln!(out, "alignment: {}", file.alignment())?;
    writeln!(out, "data offset: {}", file.data_offset())?;
    writeln!(out)?;
    writeln!(out, "metadata: {} keys", file.metadata_len())?;
    for (key, value) in file.metadata() {
        writeln!(
            out,
            "  {key} | {} | {}",
            type_name(&value),
            text_value(&value, preview)
        )?;
    }
    writeln!(out)?;
    writeln!(out, "tensors: {}", file.tensor_count())?;
    writeln!(
        out,
        "  # | name | shape (ne0 first) | type | bytes | offset (absolute) | offset (in data)"
    )?;
    for (i, t) in file.tensors().enumerate() {
        writeln!(
            out,
            "  {i} | {} | {:?} | {} | {} | {} | {}",
            t.name,
            t.shape,
            t.ggml_type,
            t.data.len(),
            t.offset,
            relative_offset(file, &t)
        )?;
    }
    writeln!(out)?;
    let types: Vec<String> = histogram(file)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    writeln!(out, "tensor types: {}", types.join(" "))?;
    let total: usize = file.tensors().map(|t| t.data.len()).sum();
    writeln!(out, "tensor bytes: {total}")
}

fn text_value(v: &Value<'_>, preview: usize) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        Value::Array(a) => text_array(a, preview),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        Value::Bool(x) => x.to_string(),
        // Value is non-exhaustive; a future variant still prints.
        other => format!("{other:?}"),
    }
}

fn text_array(a: &Array<'_>, preview: usize) -> String {
    let items: Vec<String> = a
        .iter()
        .take(preview)
        .map(|v| text_value(&v, preview))
        .collect();
    let more = if a.len() > preview { ", ..." } else { "" };
    format!("len={} [{}{more}]", a.len(), items.join(", "))
}

fn json_value(v: &Value<'_>, preview: usize) -> Json {
    match v {
        Value::Str(s) => json!(s),
        Value::Array(a) => Json::Array(
            a.iter()
                .take(preview)
                .map(|e| json_array_item(&e, preview))
                .collect(),
        ),
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        other => json!(format!("{other:?}")),
    }
}

/// Nested arrays keep their own type and length beside their (abbreviated) elements.
fn json_array_item(v: &Value<'_>, preview: usize) -> Json {
    match v {
        Value::Array(a) => json_array(a, preview),
        other => json_value(other, preview),
    }
}

fn json_array(a: &Array<'_>, preview: usize) -> Json {
    json!({
        "elem_type": a.elem_type().name(),
        "len": a.len(),
        "truncated": a.len() > preview,
        "values": json_value(&Value::Array(*a), preview),
    })
}

fn to_json(args: &Args, file: &GgufFile, preview: usize) -> Json {
    let metadata: Vec<Json> = file
        .metadata()
        .map(|(key, value)| {
            let mut entry = json!({ "key": key, "type": value.value_type().name() });
            match value {
                Value::Array(a) => {
                    let arr = json_array(&a, preview);
                    entry["elem_type"] = arr["elem_type"].clone();
                    entry["len"] = arr["len"].clone();
                    entry["truncated"] = arr["truncated"].clone();
                    entry["value"] = arr["values"].clone();
                }
                other => entry["value"] = json_value(&other, preview),
            }
            entry
        })
        .collect();
    let tensors: Vec<Json> = file
        .tensors()
        .map(|t| {
            json!({
                "name": t.name,
                "shape": t.shape,
                "type": t.ggml_type.name(),
                "type_id": t.ggml_type.id(),
                "n_bytes": t.data.len(),
                "offset": t.offset,
                "relative_offset": relative_offset(file, &t),
            })
        })
        .collect();
    json!({
        "file": args.file.display().to_string(),
        "file_size": file.bytes().len(),
        "version": file.version(),
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "metadata_count": file.metadata_len(),
        "metadata": metadata,
        "tensor_count": file.tensor_count(),
        "tensors": tensors,
        "tensor_types": histogram(file),
    })
}
