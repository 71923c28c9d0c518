//! The reference initialization (shared/SPEC.md section 3), seeded and reproducible.
//!
//! Each tensor draws from its own ChaCha8 stream (seed, stream = tensor index), so a tensor's
//! values depend only on the seed and its place in the layout, and tensors fill in parallel.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::layout::{Init, ParamLayout};

/// The reference code's seed.
pub const DEFAULT_SEED: u64 = 3407;

/// softplus^-1(y) = y + ln(1 - exp(-y)) = y + ln(-expm1(-y)).
pub fn inverse_softplus(y: f64) -> f64 {
    y + (-(-y).exp_m1()).ln()
}

/// Fills a fresh flat parameter buffer for `layout`.
pub fn init_params(layout: &ParamLayout, seed: u64) -> Vec<f32> {
    let mut params = vec![0.0f32; layout.numel];
    let mut rest: &mut [f32] = &mut params;
    let mut chunks = Vec::with_capacity(layout.tensors.len());
    for spec in &layout.tensors {
        let (head, tail) = rest.split_at_mut(spec.numel());
        chunks.push((spec, head));
        rest = tail;
    }
    std::thread::scope(|scope| {
        // A few threads over the tensors, largest first, is enough: init is run once per model.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut queues: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
        let mut indexed: Vec<_> = chunks.into_iter().enumerate().collect();
        indexed.sort_by_key(|(_, (spec, _))| std::cmp::Reverse(spec.numel()));
        for (k, item) in indexed.into_iter().enumerate() {
            queues[k % threads].push(item);
        }
        for queue in queues {
            scope.spawn(move || {
                for (index, (spec, values)) in queue {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(index as u64);
                    fill(spec.init, &spec.shape, values, &mut rng);
                }
            });
        }
    });
    params
}

fn fill(init: Init, shape: &[usize], values: &mut [f32], rng: &mut ChaCha8Rng) {
    match init {
        Init::Embedding => {
            // N(0, 0.02); the parameters are finite constants, so construction cannot fail.
            let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
            values.iter_mut().for_each(|v| *v = normal.sample(rng));
        }
        Init::Uniform { fan_in, scale } => {
            let bound = 1.0 / (fan_in as f32).sqrt();
            values
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-bound..bound) * scale);
        }
        Init::Ones => values.fill(1.0),
        Init::DtProjWeight => {
            let dt_rank = shape[1];
            let bound = (dt_rank as f32).powf(-0.5);
            values
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-bound..bound));
        }
        Init::DtProjBias => {
            let (lo, hi) = (1e-3f64.ln(), 1e-1f64.ln());
            values.iter_mut().for_each(|v| {
                let dt = rng.random_range(lo..hi).exp().max(1e-4);
                *v = inverse_softplus(dt) as f32;
            });
        }
        Init::ALog => {
            let d_state = shape[1];
            for row in values.chunks_mut(d_state) {
                for (n, v) in row.iter_mut().enumerate() {
                    *v = ((n + 1) as f32).ln();
                }
            }
        }
    }
}
