//! Test helpers: random well-formed blocks of every format, and a threaded `ParallelFor`.

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::QuantType;
use crate::parallel::ParallelFor;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn random_f32(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect()
}

fn scale16(rng: &mut StdRng, signed: bool) -> [u8; 2] {
    let mut v = rng.gen_range(1e-3f32..2e-2);
    if signed && rng.gen_bool(0.3) {
        v = -v;
    }
    f16::from_f32(v).to_bits().to_le_bytes()
}

/// `n_rows` rows of `k` elements of `ty` with random quants and sane (finite, small) scales.
pub fn random_weights(rng: &mut StdRng, ty: QuantType, n_rows: usize, k: usize) -> Vec<u8> {
    let nblocks = n_rows * k / ty.block_elems();
    let mut out = Vec::with_capacity(nblocks * ty.block_bytes());
    for _ in 0..nblocks {
        let mut b: Vec<u8> = (0..ty.block_bytes()).map(|_| rng.r#gen()).collect();
        match ty {
            QuantType::F32 => {
                b.copy_from_slice(&rng.gen_range(-1.0f32..1.0).to_le_bytes());
            }
            QuantType::F16 => b.copy_from_slice(&f16::from_f32(rng.gen_range(-1.0f32..1.0)).to_bits().to_le_bytes()),
            QuantType::BF16 => {
                let v = rng.gen_range(-1.0f32..1.0).to_bits();
                b.copy_from_slice(&((v >> 16) as u16).to_le_bytes());
            }
            QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Q5_0 => {
                b[0..2].copy_from_slice(&scale16(rng, true));
            }
            QuantType::Q4_1 | QuantType::Q5_1 => {
                b[0..2].copy_from_slice(&scale16(rng, false));
                b[2..4].copy_from_slice(&scale16(rng, true));
            }
            QuantType::Q4K | QuantType::Q5K => {
                b[0..2].copy_from_slice(&scale16(rng, false));
                b[2..4].copy_from_slice(&scale16(rng, false));
            }
            QuantType::Q6K => {
                let n = b.len();
                b[n - 2..].copy_from_slice(&scale16(rng, false));
            }
            _ => unreachable!("not a weight format"),
        }
        out.extend_from_slice(&b);
    }
    out
}

/// A `ParallelFor` over `n` scoped threads that pull task indices from a shared counter, so the
/// order and the thread a task runs on vary from run to run.
pub struct Threads(pub usize);

impl ParallelFor for Threads {
    fn num_threads(&self) -> usize {
        self.0
    }
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..self.0 {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n_tasks {
                            break;
                        }
                        task(n_tasks - 1 - i);
                    }
                });
            }
        });
    }
}
