//! Streaming the plan into a GGUF file, atomically.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use gguf_format::{GgmlType, GgufWriter, OwnedArray, OwnedValue};

use crate::metadata::KvValue;
use crate::plan::Plan;
use crate::source::SourceDtype;
use crate::tensors::{TensorType, encode};
use crate::{ConvertError, ConvertProgress};

/// Source values read per step: bounds memory to a few tens of megabytes whatever the tensor.
const CHUNK_ELEMS: usize = 1 << 20;

fn ggml_type(t: TensorType) -> GgmlType {
    match t {
        TensorType::F32 => GgmlType::F32,
        TensorType::F16 => GgmlType::F16,
        TensorType::Bf16 => GgmlType::Bf16,
        TensorType::Q8_0 => GgmlType::Q8_0,
        TensorType::Q5_0 => GgmlType::Q5_0,
        TensorType::Q4K => GgmlType::Q4K,
        TensorType::Q6K => GgmlType::Q6K,
    }
}

fn owned(v: KvValue) -> OwnedValue {
    match v {
        KvValue::U32(x) => OwnedValue::U32(x),
        KvValue::I32(x) => OwnedValue::I32(x),
        KvValue::F32(x) => OwnedValue::F32(x),
        KvValue::Bool(x) => OwnedValue::Bool(x),
        KvValue::Str(s) => OwnedValue::Str(s),
        KvValue::StrArray(v) => OwnedValue::Array(OwnedArray::Str(v)),
        KvValue::F32Array(v) => OwnedValue::Array(OwnedArray::F32(v)),
        KvValue::I32Array(v) => OwnedValue::Array(OwnedArray::I32(v)),
    }
}

/// Deletes the temporary file unless the conversion completed.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out.gguf".into());
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes the plan to a temporary file beside `out`, then renames it over `out`. Returns the
/// file's size.
pub(crate) fn write_atomic(plan: &mut Plan, out: &Path, progress: &mut dyn ConvertProgress) -> Result<u64, ConvertError> {
    let tmp = TempFile { path: temp_path(out), keep: false };
    let file = File::create(&tmp.path).map_err(ConvertError::io(&tmp.path))?;
    let (buffered, len) = write_to(plan, BufWriter::with_capacity(8 << 20, file), progress)?;
    let file = buffered.into_inner().map_err(|e| ConvertError::Io { path: tmp.path.clone(), source: e.into_error() })?;
    file.sync_all().map_err(ConvertError::io(&tmp.path))?;
    drop(file);
    std::fs::rename(&tmp.path, out).map_err(ConvertError::io(out))?;
    let mut tmp = tmp;
    tmp.keep = true;
    Ok(len)
}

/// Streams the plan into `out` (no seeking: the layout is computed first). Returns the writer
/// and the number of bytes written.
pub(crate) fn write_to<W: Write>(plan: &mut Plan, out: W, progress: &mut dyn ConvertProgress) -> Result<(W, u64), ConvertError> {
    let mut writer = GgufWriter::new();
    for (key, value) in plan.kvs.iter().cloned() {
        writer.add_metadata(key, owned(value))?;
    }
    for t in &plan.tensors {
        writer.add_tensor(t.name.clone(), &t.dims, ggml_type(t.ty))?;
    }
    let layout = writer.layout()?;
    let mut data = writer.write_header(out)?;

    let total: u64 = plan.tensors.iter().map(|t| (t.rows * t.row_len() * 4) as u64).sum();
    let mut done = 0u64;
    let (mut raw, mut values, mut encoded) = (Vec::new(), Vec::new(), Vec::new());
    for t in &plan.tensors {
        let file = &mut plan.files[t.file];
        let row_len = t.row_len().max(1);
        let rows_per_chunk = (CHUNK_ELEMS / row_len).max(1);
        let mut row = 0;
        while row < t.rows {
            let n = rows_per_chunk.min(t.rows - row);
            file.read_rows(&t.source, row, n, &mut raw, &mut values)?;
            encoded.clear();
            if t.ty == TensorType::F32 && t.source.dtype == SourceDtype::F32 && !t.add_one {
                // Already little-endian f32: copy the bytes through.
                data.write_tensor_part(&raw)?;
            } else {
                if t.add_one {
                    for v in &mut values {
                        *v += 1.0;
                    }
                }
                encode(t.ty, &values, &mut encoded)
                    .map_err(|source| ConvertError::Quantize { name: t.name.clone(), source })?;
                data.write_tensor_part(&encoded)?;
            }
            row += n;
            done += (n * row_len * 4) as u64;
            progress.advance(done, total);
        }
    }
    let out = data.finish()?;
    Ok((out, layout.file_len))
}
