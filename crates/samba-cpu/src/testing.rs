//! Test support shared by the unit tests of every primitive and the model tests: seeded random
//! tensors, a finite-difference gradient check, the relative L2 error, and the perturbed tiny
//! model with its chunked forward.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samba_model::init::init_params;
use samba_model::preset::preset_with_layout;
use samba_model::{Layout, ParamLayout};

use crate::model::{BatchShape, CpuModel, DecodeState};

/// `n` values uniform in [-scale, scale), reproducible from `seed`.
pub fn random_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// sum_i a[i] * b[i] in f64: the scalar loss `<out, probe>` whose gradient wrt `out` is `probe`.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Checks `analytic` (the gradient of `loss` at `x`) against central differences
/// (loss(x + eps e_i) - loss(x - eps e_i)) / 2 eps at `samples` coordinates spread over `x`
/// (all of them when `x` is shorter). Panics naming the tensor and coordinate when
/// |analytic - numeric| > tol * max(|analytic|, |numeric|, floor) + noise, where floor is 5% of
/// the largest numeric gradient seen (tiny entries are judged against the tensor's scale) and
/// noise = 8 * f32::EPSILON * |loss(x)| / eps is what f32 rounding of the loss alone can put
/// into a central difference. Also panics when the largest sampled numeric gradient is not
/// above that noise: such a check could not fail.
///
/// The forward runs in f32, so `eps` around 1e-2..1e-3 and `tol` around 1e-2 suit losses of
/// order one; the loss itself is accumulated in f64.
pub fn check_gradient(
    name: &str,
    x: &[f32],
    analytic: &[f32],
    mut loss: impl FnMut(&[f32]) -> f64,
    samples: usize,
    eps: f32,
    tol: f64,
) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let noise = 8.0 * f32::EPSILON as f64 * loss(x).abs() / eps as f64;
    let mut probe = x.to_vec();
    let step = (x.len() / samples.max(1)).max(1);
    let mut pairs = Vec::new();
    for i in (0..x.len()).step_by(step) {
        probe[i] = x[i] + eps;
        let plus = loss(&probe);
        probe[i] = x[i] - eps;
        let minus = loss(&probe);
        probe[i] = x[i];
        pairs.push((i, analytic[i] as f64, (plus - minus) / (2.0 * eps as f64)));
    }
    let largest = pairs.iter().map(|p| p.2.abs()).fold(0.0, f64::max);
    assert!(
        largest > 0.0,
        "{name}: every sampled gradient is zero; the check would prove nothing"
    );
    let floor = 0.05 * largest;
    for (i, a, numeric) in pairs {
        let err = ((a - numeric).abs() - noise).max(0.0) / a.abs().max(numeric.abs()).max(floor);
        assert!(
            err <= tol,
            "{name}: gradient mismatch at element {i}: analytic {a:.6e}, numeric {numeric:.6e} (relative error {err:.3e} > {tol:.1e})"
        );
    }
}

/// ||got - want||_2 / ||want||_2 in f64 (the absolute norm where `want` is all zeros; infinite
/// on a length mismatch or a value in `got` that is not finite).
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// The tiny preset in `layout` (vocabulary 41) with every parameter perturbed by up to 0.2, so a
/// forward that ignored a norm weight, a bias, D or A_log would show; `round` maps each
/// parameter as the model under test stores it (`|p| p` for f32).
pub fn perturbed_tiny(layout: Layout, round: impl Fn(f32) -> f32) -> CpuModel {
    let mut config = preset_with_layout("tiny", layout).expect("tiny preset");
    config.vocab = 41;
    let layout = ParamLayout::new(&config);
    let mut params = init_params(&layout, 3);
    let noise = random_vec(params.len(), 4, 0.2);
    params
        .iter_mut()
        .zip(noise)
        .for_each(|(p, n)| *p = round(*p + n));
    CpuModel::new(config, params)
}

/// Logits [batch, seq, vocab] of `tokens` [batch, seq] run `chunk` tokens at a time through one
/// DecodeState (of `max_context` positions), and the state they leave.
pub fn chunked_logits(
    model: &CpuModel,
    tokens: &[u32],
    batch: usize,
    chunk: usize,
    max_context: usize,
) -> (Vec<f32>, DecodeState) {
    let seq = tokens.len() / batch;
    let mut state = DecodeState::new(model, batch, max_context);
    let mut per_seq = vec![Vec::new(); batch];
    for start in (0..seq).step_by(chunk) {
        let len = chunk.min(seq - start);
        let part: Vec<u32> = (0..batch)
            .flat_map(|b| {
                tokens[b * seq + start..b * seq + start + len]
                    .iter()
                    .copied()
            })
            .collect();
        let mut acts = model.activations(BatchShape { batch, seq: len });
        model
            .forward_with_state(&mut acts, &part, &mut state)
            .expect("chunk");
        for (b, logits) in acts.logits.chunks(len * model.config.vocab).enumerate() {
            per_seq[b].extend_from_slice(logits);
        }
    }
    (per_seq.concat(), state)
}
