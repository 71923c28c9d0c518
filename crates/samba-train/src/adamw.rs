//! AdamW over flat buffers, exactly as torch.optim.AdamW computes it, and global gradient-norm
//! clipping as torch.nn.utils.clip_grad_norm_ does (shared/SPEC.md section 4: betas 0.9/0.95,
//! eps 1e-8, weight decay 0.1 on every parameter, clipping to norm 1.0).
//!
//! For step t (1-based), gradient g (already multiplied by the clipping scale), learning rate lr:
//!
//!   p   = p * (1 - lr * wd)                       decoupled weight decay, before the update
//!   m   = m + (1 - b1) * (g - m)                  torch's exp_avg.lerp_(g, 1 - b1)
//!   v   = v * b2 + (1 - b2) * g * g
//!   p   = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//!
//! The scalars (1 - b1, bias corrections, step size, 1 - lr * wd) are computed in f64 as
//! Python floats are, then rounded to f32 like torch's scalar arguments to f32 kernels; every element is updated independently, so the
//! result does not depend on how the work is split across threads.

use rayon::prelude::*;

/// The optimizer's fixed settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// The reference recipe: betas (0.9, 0.95), eps 1e-8, weight decay 0.1.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Everything one optimizer step needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub config: AdamWConfig,
    pub lr: f64,
    /// The 1-based count of optimizer steps taken, this one included (torch's state["step"]).
    pub t: u64,
    /// Multiplies every gradient before the update: the clipping scale (1 when not clipped).
    pub grad_scale: f32,
}

/// Elements per parallel work item: big enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 15;

/// One AdamW step over flat buffers of equal length: `params` [n], `grads` [n], moments `m`, `v` [n].
pub fn adamw_update(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    step: &AdamWStep,
) {
    let n = params.len();
    assert!(
        grads.len() == n && m.len() == n && v.len() == n,
        "adamw_update: buffers of different lengths"
    );
    assert!(step.t >= 1, "adamw_update: steps count from 1");
    let c = step.config;
    let t = step.t.min(i32::MAX as u64) as i32;
    let bias_correction1 = 1.0 - c.beta1.powi(t);
    let bias_correction2 = 1.0 - c.beta2.powi(t);
    let neg_step_size = (-step.lr / bias_correction1) as f32;
    let bias_correction2_sqrt = bias_correction2.sqrt() as f32;
    let decay = (1.0 - step.lr * c.weight_decay) as f32;
    let one_minus_b1 = (1.0 - c.beta1) as f32;
    let b2 = c.beta2 as f32;
    let one_minus_b2 = (1.0 - c.beta2) as f32;
    let eps = c.eps as f32;
    let scale = step.grad_scale;

    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for i in 0..p.len() {
                let g = g[i] * scale;
                // param.mul_(1 - lr * wd)
                p[i] *= decay;
                // exp_avg.lerp_(g, 1 - b1): for weights below 0.5, self + w * (end - self)
                m[i] += one_minus_b1 * (g - m[i]);
                // exp_avg_sq.mul_(b2).addcmul_(g, g, value = 1 - b2)
                v[i] = v[i] * b2 + one_minus_b2 * g * g;
                // denom = exp_avg_sq.sqrt() / sqrt(bias_correction2) + eps
                let denom = v[i].sqrt() / bias_correction2_sqrt + eps;
                // param.addcdiv_(exp_avg, denom, value = -step_size)
                p[i] += neg_step_size * m[i] / denom;
            }
        });
}

/// The L2 norm of a flat gradient buffer, sum of squares accumulated in f64 per fixed chunk and
/// the chunks added in order, so the result is the same on every run and thread count.
pub fn global_norm(grads: &[f32]) -> f32 {
    let partial: Vec<f64> = grads
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&g| g as f64 * g as f64).sum::<f64>())
        .collect();
    partial.iter().sum::<f64>().sqrt() as f32
}

/// torch's clip_grad_norm_ coefficient: min(1, max_norm / (norm + 1e-6)). Multiply every
/// gradient by it. A `max_norm` of 0 or less turns clipping off.
pub fn clip_scale(norm: f32, max_norm: f32) -> f32 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    (max_norm / (norm + 1e-6)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_scale_only_shrinks() {
        assert_eq!(clip_scale(0.5, 1.0), 1.0);
        assert_eq!(clip_scale(4.0, 1.0), 1.0 / (4.0 + 1e-6));
        assert_eq!(clip_scale(4.0, 0.0), 1.0);
    }

    #[test]
    fn global_norm_is_l2() {
        assert_eq!(global_norm(&[3.0, 4.0]), 5.0);
        let big = vec![1.0f32; 100_000];
        assert!((global_norm(&big) - (100_000f32).sqrt()).abs() < 1e-3);
    }
}
