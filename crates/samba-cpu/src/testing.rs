//! Test support shared by the unit tests of every primitive and the model tests: seeded random
//! tensors and a finite-difference gradient check.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
