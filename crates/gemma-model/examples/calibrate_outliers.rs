//! Chooses, for the int8 matmuls of EmbeddingGemma, the input blocks whose activations get a
//! second, residual int8 pass, and prints them as `src/outliers.rs`.
//!
//! `cargo run --release -p gemma-model --example calibrate_outliers -- MODEL.gguf [OPTIONS] > crates/gemma-model/src/outliers.rs`
//!
//! A block's rounding cost is what its rounding error adds to the matmul's output: the error of
//! a value is uniform in ±d/2 where `d = max|x|/127` is its block's scale, so block `b`
//! contributes `E[d_b²] · ‖W[:, b]‖²` (summed over the matrices that read the same input).
//! `E[d_b²]` and every other statistic are measured on calibration texts that none of the
//! reference sets contain: token ids of STS-B dev sentences 200–229 of each of the 11 languages
//! (English 400–429; the reference sets use the first 300 English and first 50 of six other
//! languages), run with exact f32 activations on the model given.
//!
//! Each matmul's *sensitivity* is measured too: the loss (mean 1 − cos against the same
//! weights with exact activations, on the calibration texts) when that matmul alone runs plain
//! int8 and every other one has a residual pass on every block (97 loads of the model, a few
//! minutes). The losses add up: their sum is within 10 % of the all-int8 loss.
//!
//! Allocation (`--alloc`, default `measured`): one global budget of extra multiply-adds (a
//! residual block of a matmul of output width N costs 32·N per token), filled greedily by
//! benefit per multiply-add, after a floor of the `--floor` (default 1) costliest blocks of
//! every matmul. The benefit of a block:
//! - `measured`: the matmul's measured loss times the block's share of the matmul's rounding
//!   cost;
//! - `abs`: its rounding cost;
//! - `nsr`: its rounding cost over the matmul's output power `E[‖Wx‖²]`;
//! - `nsr-branch`: that times the power the block's branch adds to the residual stream relative
//!   to the stream (`E[‖post_norm‖²] / E[‖stream after the add‖²]`).
//!
//! `uniform:K` instead takes the K costliest blocks of every matmul (the first table shipped,
//! K = 3).
//!
//! `measured-channels` (the table shipped since 2026-11-30, session 9) spends the same budget on
//! two kinds of item: a block's top channel made exact (multiplied in f32, see
//! `PackedMatrix::with_outliers`; benefit: the matmul's measured loss times the share of its
//! rounding cost that goes with that channel, cost `--channel-cost` (default 4) × N
//! multiply-adds, an f32 one being worth several int8 ones in time) and a residual block
//! (benefit as `measured`, less what the block's exact channel already took; cost 32·N).
//! Greedy by benefit per multiply-add, no floor. With `--channels-per-block 2` a block's second
//! channel (the most frequent max holder once the top one is out) is an item too, after its
//! first: it showed little (docs/NUMERICS.md, "A second channel per block").
//!
//! `--budget F` (default 1): the budget as a fraction of three blocks per matmul.
//! `--dump FILE` writes the measured statistics, `--from FILE` reads them instead of running the
//! model; `--table FILE` also writes the chosen blocks as lines `layer kind block...`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use gemma_model::{GemmaModel, LoadOptions, ModelScratch, NumericPath, Serial, TracePoint};
use gguf_format::GgufFile;

const LANGS: [&str; 11] = [
    "de", "en", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh",
];
const KINDS: [&str; 4] = ["qkv", "o", "gateup", "down"];
/// Per kind: (matrix names, input width, output width) for EmbeddingGemma-300M.
const SHAPES: [(&[&str], usize, usize); 4] = [
    (&["attn_q", "attn_k", "attn_v"], 768, 1280),
    (&["attn_output"], 768, 768),
    (&["ffn_gate", "ffn_up"], 768, 2304),
    (&["ffn_down"], 1152, 768),
];
/// Blocks per matmul of the uniform allocation the budget is measured against.
const UNIFORM: usize = 3;

/// Statistics of one (layer, kind).
#[derive(Default, Clone)]
struct Matmul {
    /// Σ over calibration tokens of d_b² per input block.
    d2: Vec<f64>,
    /// ‖W[:, b]‖² per input block, summed over the matrices reading the input.
    w2: Vec<f64>,
    /// Σ over tokens of d_b² if the block's most frequent max channel were taken out.
    d2_rest: Vec<f64>,
    /// The channel (0..32) most often holding the block's max.
    top_channel: Vec<usize>,
    /// Σ over tokens of d_b² if the two channels below were both taken out.
    d2_rest2: Vec<f64>,
    /// The channel most often holding the block's max once `top_channel` is out.
    second_channel: Vec<usize>,
    /// Σ over tokens of the output's squared norm.
    power: f64,
    /// The branch's power added to the residual stream relative to the stream after the add.
    branch: f64,
    /// Measured loss (mean 1 − cos against exact activations) when only this matmul runs plain int8.
    loss: f64,
}

impl Matmul {
    fn cost(&self, b: usize) -> f64 {
        self.d2[b] * self.w2[b]
    }
    fn total(&self) -> f64 {
        (0..self.d2.len()).map(|b| self.cost(b)).sum()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: calibrate_outliers MODEL.gguf [--alloc uniform:K|abs|nsr|nsr-branch|measured|measured-channels] [--budget F] [--floor K] [--channel-cost C] [--channels-per-block 1|2] [--dump FILE] [--from FILE] [--table FILE]";
    let path: PathBuf = args.first().map(PathBuf::from).ok_or(usage)?;
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let alloc = opt("--alloc").unwrap_or_else(|| "measured".into());
    let budget: f64 = opt("--budget")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1.0);

    let file = Arc::new(GgufFile::open(&path)?);
    let layers = (0..)
        .take_while(|l| file.tensor(&format!("blk.{l}.attn_q.weight")).is_some())
        .count();
    let (stats, texts) = match opt("--from") {
        Some(from) => load(&std::fs::read_to_string(from)?)?,
        None => {
            let texts = calibration_texts()?;
            (measure(&file, &path, layers, &texts)?, texts.len())
        }
    };
    if let Some(dump) = opt("--dump") {
        std::fs::write(dump, save(&stats, texts))?;
    }

    // Channel structure of the costliest blocks: is one channel the whole outlier?
    for kind in 0..4 {
        let (mut all, mut rest) = (0.0, 0.0);
        for l in 0..layers {
            let m = &stats[&(l, kind)];
            let mut order: Vec<usize> = (0..m.d2.len()).collect();
            order.sort_by(|&a, &b| m.cost(b).total_cmp(&m.cost(a)));
            for &b in &order[..UNIFORM] {
                all += m.cost(b);
                rest += m.d2_rest[b] * m.w2[b];
            }
        }
        eprintln!(
            "{:6}: top-{UNIFORM} blocks without their top channel keep {:.0} % of their rounding cost",
            KINDS[kind],
            100.0 * rest / all
        );
    }

    let floor: usize = opt("--floor").map(|s| s.parse()).transpose()?.unwrap_or(1);
    let channel_cost: f64 = opt("--channel-cost").map(|s| s.parse()).transpose()?.unwrap_or(4.0);
    let (chosen, channels) = if alloc == "measured-channels" {
        let per_block: usize = opt("--channels-per-block").map(|s| s.parse()).transpose()?.unwrap_or(1);
        if !(1..=2).contains(&per_block) {
            return Err("--channels-per-block: 1 or 2 (the kernels take at most two per block on average)".into());
        }
        allocate_with_channels(&stats, layers, budget, channel_cost, per_block)?
    } else {
        (allocate(&stats, layers, &alloc, budget, floor)?, vec![vec![Vec::new(); 4]; layers])
    };

    // Report: extra multiply-adds per token relative to the per-token int8 work, captured cost.
    let macs_per_layer: usize = SHAPES.iter().map(|(_, k, n)| k * n).sum();
    let extra = |sel: &[Vec<Vec<usize>>]| -> usize {
        sel.iter()
            .map(|per| {
                per.iter()
                    .enumerate()
                    .map(|(kind, bs)| 32 * SHAPES[kind].2 * bs.len())
                    .sum::<usize>()
            })
            .sum()
    };
    let channel_macs: f64 = channels
        .iter()
        .map(|per| per.iter().enumerate().map(|(kind, cs)| channel_cost * (SHAPES[kind].2 * cs.len()) as f64).sum::<f64>())
        .sum();
    let extra_macs = extra(&chosen) + channel_macs.round() as usize;
    let pct = 100.0 * extra_macs as f64 / (macs_per_layer * layers) as f64;
    eprintln!(
        "alloc {alloc} budget {budget}: {extra_macs} extra multiply-adds per token, {pct:.2} % of the per-token int8 work"
    );
    for (kind, kname) in KINDS.iter().enumerate() {
        let n: usize = chosen.iter().map(|per| per[kind].len()).sum();
        let share: f64 = (0..layers)
            .map(|l| {
                let m = &stats[&(l, kind)];
                chosen[l][kind].iter().map(|&b| m.cost(b)).sum::<f64>() / m.total()
            })
            .sum::<f64>()
            / layers as f64;
        let per: Vec<usize> = chosen.iter().map(|p| p[kind].len()).collect();
        eprintln!(
            "{kname:6}: {n:3} blocks, mean captured share {:.0} %, per layer {per:?}",
            100.0 * share
        );
    }

    if let Some(table) = opt("--table") {
        let mut s = String::new();
        for (l, per) in chosen.iter().enumerate() {
            for (kind, bs) in per.iter().enumerate() {
                let list: Vec<String> = bs.iter().map(|b| b.to_string()).collect();
                writeln!(s, "{l} {kind} {}", list.join(" "))?;
            }
        }
        std::fs::write(table, s)?;
    }

    println!(
        "//! Input blocks of each int8 matmul whose activations get a second, residual int8 pass"
    );
    println!(
        "//! (see `PackedMatrix::with_residual_blocks` and docs/NUMERICS.md), for EmbeddingGemma-300M."
    );
    println!(
        "//! Generated by `cargo run --release -p gemma-model --example calibrate_outliers -- MODEL.gguf`"
    );
    println!(
        "//! from {texts} calibration texts ({}), do not edit by hand.",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    if alloc == "measured-channels" {
        let n: usize = channels.iter().flatten().map(Vec::len).sum();
        println!(
            "//! Allocation `{alloc}`, channel cost {channel_cost} × N, budget {budget} × the work of {UNIFORM} residual"
        );
        println!("//! blocks per matmul: {n} exact channels and the residual blocks below, the time of");
        println!("//! {pct:.2} % more int8 multiply-adds per token than plain int8.");
    } else if alloc.starts_with("uniform:") {
        println!(
            "//! Allocation `{alloc}`: {pct:.2} % more int8 multiply-adds per token than plain int8."
        );
    } else {
        println!(
            "//! Allocation `{alloc}`, floor {floor}, budget {budget} × the work of {UNIFORM} blocks per matmul:"
        );
        println!("//! {pct:.2} % more int8 multiply-adds per token than plain int8.");
    }
    println!();
    println!(
        "/// `[layer][kind]` with kinds Q/K/V, attention output, gate/up, down: 32-element input"
    );
    println!("/// blocks, most costly first.");
    println!("pub(crate) const BLOCKS: [[&[u8]; 4]; {layers}] = [");
    for per in &chosen {
        let row: Vec<String> = per
            .iter()
            .map(|bs| {
                format!(
                    "&[{}]",
                    bs.iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        println!("    [{}],", row.join(", "));
    }
    println!("];");
    println!();
    println!("/// `[layer][kind]`: input channels multiplied in f32 (`PackedMatrix::with_outliers`),");
    println!("/// increasing.");
    println!("pub(crate) const CHANNELS: [[&[u16]; 4]; {layers}] = [");
    for per in &channels {
        let row: Vec<String> = per
            .iter()
            .map(|cs| format!("&[{}]", cs.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")))
            .collect();
        println!("    [{}],", row.join(", "));
    }
    println!("];");
    Ok(())
}

/// `measured-channels`: `([layer][kind]` → residual blocks in the order chosen, `[layer][kind]`
/// → exact channels, increasing`)`.
#[allow(clippy::type_complexity)]
fn allocate_with_channels(
    stats: &BTreeMap<(usize, usize), Matmul>,
    layers: usize,
    budget: f64,
    channel_cost: f64,
    per_block: usize,
) -> Result<(Vec<Vec<Vec<usize>>>, Vec<Vec<Vec<usize>>>), String> {
    let mut blocks = vec![vec![Vec::new(); 4]; layers];
    let mut chans = vec![vec![Vec::new(); 4]; layers];
    // (layer, kind, block) → exact channels taken from it (its top one, then its second)
    let mut has_channel: BTreeMap<(usize, usize, usize), usize> = BTreeMap::new();
    let per_layer: usize = SHAPES.iter().map(|(_, _, n)| UNIFORM * n).sum();
    let mut left = budget * (32 * per_layer * layers) as f64;
    loop {
        // (benefit per multiply-add, cost, layer, kind, block, residual?)
        let mut best: Option<(f64, f64, usize, usize, usize, bool)> = None;
        for l in 0..layers {
            for kind in 0..4 {
                let m = &stats[&(l, kind)];
                if m.loss <= 0.0 {
                    return Err("--alloc measured-channels: no sensitivity in the statistics".to_owned());
                }
                let (w, n) = (m.loss / m.total(), SHAPES[kind].2 as f64);
                for b in 0..m.d2.len() {
                    if blocks[l][kind].contains(&b) {
                        continue;
                    }
                    let left_after = [m.cost(b), m.d2_rest[b] * m.w2[b], m.d2_rest2[b] * m.w2[b]];
                    let taken = has_channel.get(&(l, kind, b)).copied().unwrap_or(0);
                    let mut options = vec![(w * left_after[taken], 32.0 * n, true)];
                    if taken < per_block {
                        options.push((w * (left_after[taken] - left_after[taken + 1]), channel_cost * n, false));
                    }
                    for (gain, cost, residual) in options {
                        if cost <= left && best.is_none_or(|bst| gain / cost > bst.0) {
                            best = Some((gain / cost, cost, l, kind, b, residual));
                        }
                    }
                }
            }
        }
        let Some((_, cost, l, kind, b, residual)) = best else { break };
        left -= cost;
        if residual {
            blocks[l][kind].push(b);
        } else {
            let taken = has_channel.entry((l, kind, b)).or_insert(0);
            let m = &stats[&(l, kind)];
            chans[l][kind].push(32 * b + if *taken == 0 { m.top_channel[b] } else { m.second_channel[b] });
            *taken += 1;
        }
    }
    for per in &mut chans {
        for cs in per {
            cs.sort_unstable();
        }
    }
    Ok((blocks, chans))
}

/// `[layer][kind]` → chosen blocks, each matmul's most costly first.
fn allocate(
    stats: &BTreeMap<(usize, usize), Matmul>,
    layers: usize,
    alloc: &str,
    budget: f64,
    floor: usize,
) -> Result<Vec<Vec<Vec<usize>>>, String> {
    let mut chosen = vec![vec![Vec::new(); 4]; layers];
    if let Some(k) = alloc.strip_prefix("uniform:") {
        let k: usize = k.parse().map_err(|_| format!("bad --alloc {alloc}"))?;
        for (l, per) in chosen.iter_mut().enumerate() {
            for (kind, bs) in per.iter_mut().enumerate() {
                let m = &stats[&(l, kind)];
                let mut order: Vec<usize> = (0..m.d2.len()).collect();
                order.sort_by(|&a, &b| m.cost(b).total_cmp(&m.cost(a)));
                *bs = order[..k].to_vec();
            }
        }
        return Ok(chosen);
    }
    let weight = |m: &Matmul| match alloc {
        "abs" => Ok(1.0),
        "nsr" => Ok(1.0 / m.power),
        "nsr-branch" => Ok(m.branch / m.power),
        "measured" if m.loss > 0.0 => Ok(m.loss / m.total()),
        "measured" => Err("--alloc measured: no sensitivity in the statistics".to_owned()),
        _ => Err(format!("bad --alloc {alloc}")),
    };
    // (benefit per multiply-add, layer, kind, block)
    let mut items = Vec::new();
    for l in 0..layers {
        for kind in 0..4 {
            let m = &stats[&(l, kind)];
            let w = weight(m)?;
            for b in 0..m.d2.len() {
                items.push((m.cost(b) * w / SHAPES[kind].2 as f64, l, kind, b));
            }
        }
    }
    items.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)))
    });
    let per_layer: usize = SHAPES.iter().map(|(_, _, n)| UNIFORM * n).sum();
    let mut left = (budget * (per_layer * layers) as f64).round() as i64;
    // A floor of the `floor` costliest blocks of every matmul first.
    if floor > 0 {
        for (l, per) in chosen.iter_mut().enumerate() {
            for (kind, bs) in per.iter_mut().enumerate() {
                let m = &stats[&(l, kind)];
                let mut order: Vec<usize> = (0..m.d2.len()).collect();
                order.sort_by(|&a, &b| m.cost(b).total_cmp(&m.cost(a)));
                *bs = order[..floor].to_vec();
                left -= (floor * SHAPES[kind].2) as i64;
            }
        }
        items.retain(|&(_, l, kind, b)| !chosen[l][kind].contains(&b));
    }
    for (_, l, kind, b) in items {
        let c = SHAPES[kind].2 as i64;
        if c <= left {
            left -= c;
            chosen[l][kind].push(b);
        }
    }
    for (l, per) in chosen.iter_mut().enumerate() {
        for (kind, bs) in per.iter_mut().enumerate() {
            let m = &stats[&(l, kind)];
            bs.sort_by(|&a, &b| m.cost(b).total_cmp(&m.cost(a)).then(a.cmp(&b)));
        }
    }
    Ok(chosen)
}

/// Runs the calibration texts with exact activations and collects every statistic.
fn measure(
    file: &Arc<GgufFile>,
    path: &std::path::Path,
    layers: usize,
    texts: &[Vec<u32>],
) -> Result<BTreeMap<(usize, usize), Matmul>, Box<dyn std::error::Error>> {
    let model = GemmaModel::load(
        Arc::clone(file),
        LoadOptions {
            path: NumericPath::F32,
            ..LoadOptions::default()
        },
    )?;
    let c = model.config().clone();
    assert_eq!(layers, c.block_count, "{}", path.display());

    let mut stats: BTreeMap<(usize, usize), Matmul> = BTreeMap::new();
    // Per (kind, layer, block, channel): how often that channel holds the block's max.
    let mut argmax: BTreeMap<(usize, usize), Vec<[u32; 32]>> = BTreeMap::new();
    // Σ‖·‖² of the post-norm branch outputs and the stream after each add: [layer][attn post, attn stream, ffn post, ffn stream].
    let mut branch = vec![[0f64; 4]; layers];
    let mut inputs: Vec<Vec<(usize, usize, Vec<f32>)>> = Vec::new();
    let mut scratch = ModelScratch::new(&model, c.context_length);
    let mut out = vec![0f32; c.embedding_dim];
    let sq = |x: &[f32]| x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
    {
        for ids in texts {
            // The inputs are kept for a second pass (d² without each block's top channel needs
            // the argmax counts of all texts): a few MB in all.
            let mut keep: Vec<(usize, usize, Vec<f32>)> = Vec::new();
            let mut record = |p: TracePoint, x: &[f32]| {
                // A matmul's input (its kind), a matmul's output (its power, by kind), or the
                // residual stream around a branch (`branch` column).
                enum Point {
                    Input(usize),
                    Output(usize),
                    Branch(usize),
                }
                let (point, layer) = match p {
                    TracePoint::AttnNorm(l) => (Point::Input(0), l),
                    TracePoint::AttnOut(l) => (Point::Input(1), l),
                    TracePoint::FfnNorm(l) => (Point::Input(2), l),
                    TracePoint::DownIn(l) => (Point::Input(3), l),
                    TracePoint::Q(l) | TracePoint::K(l) | TracePoint::V(l) => (Point::Output(0), l),
                    TracePoint::OProj(l) => (Point::Output(1), l),
                    TracePoint::Gate(l) | TracePoint::Up(l) => (Point::Output(2), l),
                    TracePoint::Down(l) => (Point::Output(3), l),
                    TracePoint::PostAttnNorm(l) => (Point::Branch(0), l),
                    TracePoint::ResidualAfterAttn(l) => (Point::Branch(1), l),
                    TracePoint::PostFfwNorm(l) => (Point::Branch(2), l),
                    TracePoint::LayerOut(l) => (Point::Branch(3), l),
                    _ => return,
                };
                let kind = match point {
                    Point::Input(kind) => kind,
                    Point::Output(kind) => {
                        stats.entry((layer, kind)).or_default().power += sq(x);
                        return;
                    }
                    Point::Branch(i) => {
                        branch[layer][i] += sq(x);
                        return;
                    }
                };
                let k = SHAPES[kind].1;
                let m = stats.entry((layer, kind)).or_default();
                m.d2.resize(k / 32, 0.0);
                let am = argmax
                    .entry((layer, kind))
                    .or_insert_with(|| vec![[0; 32]; k / 32]);
                for row in x.chunks_exact(k) {
                    for (b, blk) in row.chunks_exact(32).enumerate() {
                        let (i, mx) = block_max(blk, &[]);
                        let d = f64::from(mx) / 127.0;
                        m.d2[b] += d * d;
                        am[b][i] += 1;
                    }
                }
                keep.push((layer, kind, x.to_vec()));
            };
            model.trace_text(ids, &mut scratch, &mut out, &mut record)?;
            inputs.push(keep);
        }
    }
    for ((layer, kind), am) in &argmax {
        let m = stats.get_mut(&(*layer, *kind)).ok_or("stats")?;
        m.top_channel = am
            .iter()
            .map(|counts| {
                (0..32)
                    .max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))
                    .unwrap_or(0)
            })
            .collect();
        m.d2_rest = vec![0.0; m.d2.len()];
        m.d2_rest2 = vec![0.0; m.d2.len()];
    }
    // The second channel: the most frequent max holder once the top channel is out.
    let mut argmax2: BTreeMap<(usize, usize), Vec<[u32; 32]>> = BTreeMap::new();
    for keep in &inputs {
        for (layer, kind, x) in keep {
            let k = SHAPES[*kind].1;
            let m = &stats[&(*layer, *kind)];
            let am = argmax2.entry((*layer, *kind)).or_insert_with(|| vec![[0; 32]; k / 32]);
            for row in x.chunks_exact(k) {
                for (b, blk) in row.chunks_exact(32).enumerate() {
                    am[b][block_max(blk, &[m.top_channel[b]]).0] += 1;
                }
            }
        }
    }
    for ((layer, kind), am) in &argmax2 {
        let m = stats.get_mut(&(*layer, *kind)).ok_or("stats")?;
        m.second_channel = am
            .iter()
            .map(|counts| (0..32).max_by_key(|&c| (counts[c], std::cmp::Reverse(c))).unwrap_or(0))
            .collect();
    }
    for keep in &inputs {
        for (layer, kind, x) in keep {
            let (layer, kind) = (*layer, *kind);
            let k = SHAPES[kind].1;
            let m = stats.get_mut(&(layer, kind)).ok_or("stats")?;
            for row in x.chunks_exact(k) {
                for (b, blk) in row.chunks_exact(32).enumerate() {
                    let (t, t2) = (m.top_channel[b], m.second_channel[b]);
                    m.d2_rest[b] += (f64::from(block_max(blk, &[t]).1) / 127.0).powi(2);
                    m.d2_rest2[b] += (f64::from(block_max(blk, &[t, t2]).1) / 127.0).powi(2);
                }
            }
        }
    }
    for (l, br) in branch.iter().enumerate() {
        for kind in 0..4 {
            let m = stats.get_mut(&(l, kind)).ok_or("stats")?;
            m.branch = if kind < 2 {
                br[0] / br[1]
            } else {
                br[2] / br[3]
            };
        }
    }

    // ‖W[:, b]‖² per input block, summed over the matrices reading that input.
    for ((layer, kind), m) in stats.iter_mut() {
        let (names, k, _) = SHAPES[*kind];
        m.w2 = vec![0f64; k / 32];
        for short in names {
            let name = format!("blk.{layer}.{short}.weight");
            let t = file
                .tensor(&name)
                .ok_or_else(|| format!("missing {name}"))?;
            let ty = quant_kernels::QuantType::from_ggml_id(t.ggml_type.id())
                .ok_or_else(|| format!("{name}: unsupported type"))?;
            let rb = ty.row_bytes(k)?;
            let mut row = vec![0f32; k];
            for r in t.data.chunks_exact(rb) {
                quant_kernels::dequantize_row(ty, r, &mut row)?;
                for (b, blk) in row.chunks_exact(32).enumerate() {
                    m.w2[b] += blk.iter().map(|w| f64::from(*w).powi(2)).sum::<f64>();
                }
            }
        }
    }
    sensitivity(file, layers, texts, &mut stats)?;
    Ok(stats)
}

/// A block's largest |value| and the first channel holding it, the channels in `skip` left out.
fn block_max(blk: &[f32], skip: &[usize]) -> (usize, f32) {
    blk.iter()
        .enumerate()
        .filter(|(j, _)| !skip.contains(j))
        .fold((0, -1f32), |(i, m), (j, v)| if v.abs() > m { (j, v.abs()) } else { (i, m) })
}

/// The calibration texts: STS-B dev sentences 200–229 of each language (English 400–429).
fn calibration_texts() -> Result<Vec<Vec<u32>>, Box<dyn std::error::Error>> {
    let dir = model_fetch::testing::reference_dir();
    let mut texts = Vec::new();
    for lang in LANGS {
        let raw = std::fs::read_to_string(dir.join(format!("tokens-dev-{lang}.jsonl")))?;
        let skip = if lang == "en" { 400 } else { 200 };
        for line in raw
            .lines()
            .filter(|l| !l.trim().is_empty())
            .skip(skip)
            .take(30)
        {
            let v: serde_json::Value = serde_json::from_str(line)?;
            texts.push(
                v["ids"]
                    .as_array()
                    .ok_or("ids")?
                    .iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect(),
            );
        }
    }
    Ok(texts)
}

/// Embeds `texts` on every core (each text's vector does not depend on the split).
fn embed_all(model: &GemmaModel, texts: &[Vec<u32>]) -> Vec<f32> {
    let d = model.embedding_dim();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = vec![0f32; texts.len() * d];
    let per = texts.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (chunk, o) in texts.chunks(per).zip(out.chunks_mut(per * d)) {
            s.spawn(move || {
                let mut scratch = ModelScratch::new(model, 512);
                for (ids, v) in chunk.iter().zip(o.chunks_exact_mut(d)) {
                    model
                        .embed_batch(&[ids.as_slice()], &mut scratch, &Serial, v)
                        .expect("embed");
                }
            });
        }
    });
    out
}

/// Mean of 1 − cos between the rows of `a` and `b`.
fn mean_loss(a: &[f32], b: &[f32], d: usize) -> f64 {
    let n = a.len() / d;
    let sum: f64 = a
        .chunks_exact(d)
        .zip(b.chunks_exact(d))
        .map(|(x, y)| {
            let dot: f64 = x
                .iter()
                .zip(y)
                .map(|(p, q)| f64::from(*p) * f64::from(*q))
                .sum();
            let nx: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
            1.0 - dot / (nx * ny)
        })
        .sum();
    sum / n as f64
}

/// Measures each matmul's sensitivity: the loss (mean 1 − cos against the same weights with
/// exact activations) when that matmul alone runs plain int8 and every other one has every
/// input block residual (which is exact to about 1e-8).
fn sensitivity(
    file: &Arc<GgufFile>,
    layers: usize,
    texts: &[Vec<u32>],
    stats: &mut BTreeMap<(usize, usize), Matmul>,
) -> Result<(), Box<dyn std::error::Error>> {
    let exact = GemmaModel::load(
        Arc::clone(file),
        LoadOptions {
            path: NumericPath::F32,
            ..LoadOptions::default()
        },
    )?;
    let d = exact.embedding_dim();
    let exact = embed_all(&exact, texts);
    let every: Vec<Vec<u8>> = SHAPES
        .iter()
        .map(|(_, k, _)| (0..(k / 32) as u8).collect())
        .collect();
    let run = |skip: Option<(usize, usize)>| -> Result<f64, Box<dyn std::error::Error>> {
        let table: Vec<[&[u8]; 4]> = (0..layers)
            .map(|l| {
                std::array::from_fn(|kind| {
                    if skip == Some((l, kind)) {
                        &[][..]
                    } else {
                        &every[kind][..]
                    }
                })
            })
            .collect();
        let model = GemmaModel::load_with_outlier_blocks(
            Arc::clone(file),
            LoadOptions::default(),
            &Serial,
            &table,
        )?;
        Ok(mean_loss(&embed_all(&model, texts), &exact, d))
    };
    let floor = run(None)?;
    eprintln!("sensitivity: every block residual: loss {floor:.3e}");
    for l in 0..layers {
        for (kind, kname) in KINDS.iter().enumerate() {
            let loss = run(Some((l, kind)))? - floor;
            stats.get_mut(&(l, kind)).ok_or("stats")?.loss = loss;
            eprintln!("sensitivity: layer {l:2} {kname:6} plain int8: loss {loss:.3e}");
        }
    }
    Ok(())
}

/// Statistics as text: `texts N`, then per matmul `mm layer kind power branch loss` followed by
/// one line per block `b d2 w2 d2_rest top_channel`.
fn save(stats: &BTreeMap<(usize, usize), Matmul>, texts: usize) -> String {
    let mut s = format!("texts {texts}\n");
    for ((l, kind), m) in stats {
        let _ = writeln!(s, "mm {l} {kind} {:e} {:e} {:e}", m.power, m.branch, m.loss);
        for b in 0..m.d2.len() {
            let _ = writeln!(
                s,
                "{b} {:e} {:e} {:e} {} {:e} {}",
                m.d2[b], m.w2[b], m.d2_rest[b], m.top_channel[b], m.d2_rest2[b], m.second_channel[b]
            );
        }
    }
    s
}

/// Statistics per (layer, kind).
type Stats = BTreeMap<(usize, usize), Matmul>;

fn load(s: &str) -> Result<(Stats, usize), Box<dyn std::error::Error>> {
    let mut stats = BTreeMap::new();
    let mut texts = 0;
    let mut cur: Option<(usize, usize)> = None;
    for line in s.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["texts", n] => texts = n.parse()?,
            ["mm", l, k, p, br, loss] => {
                let key = (l.parse()?, k.parse()?);
                stats.insert(
                    key,
                    Matmul {
                        power: p.parse()?,
                        branch: br.parse()?,
                        loss: loss.parse()?,
                        ..Matmul::default()
                    },
                );
                cur = Some(key);
            }
            [_, d2, w2, rest, top, rest2, second] => {
                let m: &mut Matmul = stats.get_mut(&cur.ok_or("block before mm")?).ok_or("mm")?;
                m.d2.push(d2.parse()?);
                m.w2.push(w2.parse()?);
                m.d2_rest.push(rest.parse()?);
                m.top_channel.push(top.parse()?);
                m.d2_rest2.push(rest2.parse()?);
                m.second_channel.push(second.parse()?);
            }
            _ => return Err(format!("bad line {line:?}").into()),
        }
    }
    Ok((stats, texts))
}
