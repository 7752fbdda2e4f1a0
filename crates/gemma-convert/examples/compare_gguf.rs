//! Compares two GGUF files tensor by tensor (names, types, shapes, bytes) and prints how many
//! tensors are byte-identical. Used to check our `--type q4_k_m` output against a file written
//! by llama.cpp's `llama_model_quantize`.
//!
//! `cargo run --release -p gemma-convert --example compare_gguf -- OURS.gguf THEIRS.gguf [F32.gguf]`
//!
//! With a third (F32) file, the first differing block of every differing quantized tensor is
//! printed with its input, to localise a numerical difference.
//!
//! `compare_gguf --requant F32.gguf THEIRS.gguf` instead quantizes each tensor of the F32 file
//! with quant-kernels to the type it has in THEIRS and compares the bytes (any llama.cpp
//! quantization type this crate's formats cover, e.g. Q5_K_M, Q4_0, Q4_1, Q5_1).

use gguf_format::GgufFile;
use quant_kernels::QuantType;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 3 && args[0] == "--requant" {
        return requant(&args[1], &args[2]);
    }
    if args.len() < 2 {
        return Err("usage: compare_gguf OURS.gguf THEIRS.gguf [F32.gguf]".into());
    }
    let ours = GgufFile::open(&args[0])?;
    let theirs = GgufFile::open(&args[1])?;
    let f32_file = args.get(2).map(GgufFile::open).transpose()?;
    let (mut same, mut differ) = (0usize, 0usize);
    let mut by_type: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for t in theirs.tensors() {
        let Some(o) = ours.tensor(t.name) else {
            println!("missing in ours: {}", t.name);
            differ += 1;
            continue;
        };
        let entry = by_type.entry(t.ggml_type.name().to_owned()).or_default();
        if o.ggml_type == t.ggml_type && o.shape == t.shape && o.data == t.data {
            same += 1;
            entry.0 += 1;
            continue;
        }
        differ += 1;
        entry.1 += 1;
        let diff_bytes = o.data.iter().zip(t.data).filter(|(a, b)| a != b).count();
        println!(
            "DIFF {}: ours {} {:?} ({} B), theirs {} {:?} ({} B), {diff_bytes} bytes differ",
            t.name,
            o.ggml_type.name(),
            o.shape,
            o.data.len(),
            t.ggml_type.name(),
            t.shape,
            t.data.len()
        );
        if let (Some(f), Some(ty)) = (&f32_file, QuantType::from_ggml_id(t.ggml_type.id())) {
            let src = f.tensor(t.name).ok_or("tensor missing in F32 file")?;
            let x: Vec<f32> = src.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let (be, bb) = (ty.block_elems(), ty.block_bytes());
            if let Some(i) = (0..t.data.len() / bb).find(|&i| o.data.get(i * bb..(i + 1) * bb) != Some(&t.data[i * bb..(i + 1) * bb])) {
                println!("  first differing block {i}");
                println!("  ours   {:02x?}", &o.data[i * bb..(i + 1) * bb]);
                println!("  theirs {:02x?}", &t.data[i * bb..(i + 1) * bb]);
                let bits: Vec<String> = x[i * be..(i + 1) * be].iter().map(|v| format!("{:#010x}", v.to_bits())).collect();
                println!("  input bits {}", bits.join(","));
            }
        }
    }
    println!("{same} identical, {differ} different, of {} tensors", theirs.tensor_count());
    for (ty, (s, d)) in by_type {
        println!("  {ty}: {s} identical, {d} different");
    }
    Ok(())
}

fn requant(f32_path: &str, theirs_path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let f32_file = GgufFile::open(f32_path)?;
    let theirs = GgufFile::open(theirs_path)?;
    let mut by_type: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for t in theirs.tensors() {
        let src = f32_file.tensor(t.name).ok_or("tensor missing in F32 file")?;
        let ty = QuantType::from_ggml_id(t.ggml_type.id()).ok_or("type unknown to quant-kernels")?;
        let x: Vec<f32> = src.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let ours = quant_kernels::quantize_tensor(ty, &x, t.shape[0] as usize)?;
        let entry = by_type.entry(t.ggml_type.name().to_owned()).or_default();
        if ours == t.data {
            entry.0 += 1;
        } else {
            entry.1 += 1;
            println!("DIFF {} ({})", t.name, t.ggml_type.name());
        }
    }
    for (ty, (s, d)) in by_type {
        println!("  {ty}: {s} identical, {d} different");
    }
    Ok(())
}
