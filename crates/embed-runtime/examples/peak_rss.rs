//! Peak RSS of one `Embedder`, alone in its process: after loading MODEL, and after embedding the
//! first 32 texts of TEXTS (a JSON-lines file with `text` fields). Prints one JSON line.
//!
//! `cargo run --release -p embed-runtime --example peak_rss -- MODEL TEXTS`
//!
//! `cargo xtask limits` runs it: xtask's own counting allocator reallocates by copying, which
//! would inflate a peak measured inside xtask.

use embed_runtime::Embedder;

fn peak_rss_bytes() -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(kb * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(texts)) = (args.next(), args.next()) else {
        return Err("usage: peak_rss MODEL TEXTS".into());
    };
    let texts: Vec<String> = std::fs::read_to_string(texts)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(32)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["text"].as_str().unwrap_or_default().to_owned()))
        .collect::<Result<_, _>>()?;
    if texts.len() < 32 {
        return Err("TEXTS needs at least 32 lines".into());
    }
    let e = Embedder::builder().model(model).build()?;
    let after_load = peak_rss_bytes()?;
    e.embed(&texts)?;
    let after_batch32 = peak_rss_bytes()?;
    println!("{{\"after_load\":{after_load},\"after_batch32\":{after_batch32}}}");
    Ok(())
}
