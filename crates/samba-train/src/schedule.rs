//! The learning-rate schedule of the reference recipe (shared/SPEC.md section 4): linear warmup,
//! then a cosine decay to a fraction (10%) of the peak, reached at the last step.
//!
//! Steps count from 0 to `total - 1`. With w = max(warmup, 1) warmup steps:
//!
//!   lr(s) = peak * (s + 1) / w                                   s < w   (lr(w - 1) = peak)
//!   lr(s) = min + (peak - min) * (1 + cos(pi * r)) / 2           s >= w - 1,
//!           r = (s - (w - 1)) / (total - w),  min = peak * min_lr_ratio
//!
//! so the first step already learns (the reference's `peak * s / w` spends its first step at
//! lr 0), the last warmup step is at the peak, and the last step is at exactly `min`.

/// Warmup then cosine, as plain data.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// The final learning rate as a fraction of the peak (0.1 in the reference).
    pub min_lr_ratio: f64,
}

impl Schedule {
    /// The paper's warmup length, 1% of the run (rounded, at least one step).
    pub fn default_warmup(total_steps: u64) -> u64 {
        ((total_steps as f64 * 0.01).round() as u64).max(1)
    }

    /// The learning rate of step `step` (0-based). Steps past the end stay at the minimum.
    pub fn lr(&self, step: u64) -> f64 {
        let w = self.warmup_steps.max(1);
        if step < w {
            return self.peak_lr * (step + 1) as f64 / w as f64;
        }
        let min = self.peak_lr * self.min_lr_ratio;
        let span = self.total_steps.saturating_sub(w);
        if span == 0 {
            return min;
        }
        let r = ((step + 1 - w) as f64 / span as f64).min(1.0);
        min + (self.peak_lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * r).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_warmup_is_one_percent() {
        assert_eq!(Schedule::default_warmup(1000), 10);
        assert_eq!(Schedule::default_warmup(20), 1);
        assert_eq!(Schedule::default_warmup(0), 1);
    }
}
