//! `cargo run --release -p gemma-convert --example convert -- SRC_DIR OUT.gguf TYPE [MODEL_ID]`
//! (the CLI's `ggufembed convert` is the user-facing form of this).

use std::path::Path;
use std::time::Instant;

use gemma_convert::{ConvertOptions, OutType, convert_with};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: convert SRC_DIR OUT.gguf f32|f16|bf16|q8_0 [MODEL_ID]");
        std::process::exit(2);
    }
    let Some(out_type) = OutType::from_name(&args[2]) else {
        eprintln!("unknown type {}", args[2]);
        std::process::exit(2);
    };
    let options = ConvertOptions { model_id: args.get(3).cloned() };
    let start = Instant::now();
    match convert_with(Path::new(&args[0]), Path::new(&args[1]), out_type, &options, &mut |_, _| {}) {
        Ok(report) => println!("{report:?} in {:.1} s", start.elapsed().as_secs_f64()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
