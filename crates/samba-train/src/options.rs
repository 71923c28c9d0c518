//! The settings of a training run, as plain data: the CLI fills them, `trainer.json` keeps them,
//! and a resumed run checks that the ones that shape the result have not changed.

use serde::{Deserialize, Serialize};

use crate::adamw::AdamWConfig;
use crate::error::{Result, TrainError};
use crate::schedule::Schedule;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Optimizer steps of the whole run.
    pub steps: u64,
    /// Tokens of input per training window.
    pub seq_len: usize,
    /// Tokens per optimizer step (a multiple of seq_len * micro_batch).
    pub batch_tokens: usize,
    /// Windows per forward pass; batch_tokens / (seq_len * micro_batch) of them are
    /// accumulated into one step.
    pub micro_batch: usize,
    /// Peak learning rate (the reference: 4e-4).
    pub lr: f64,
    /// Linear warmup steps; `None` is 1% of `steps`.
    pub warmup: Option<u64>,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip; 0 turns clipping off.
    pub clip: f32,
    /// Checkpoint every this many steps (and always at the end); 0: only at the end.
    pub save_every: u64,
    /// Validate every this many steps (and at the end); 0: never.
    pub eval_every: u64,
    /// Held-out windows of 4x the training length per validation (each is also read as 2 and 4
    /// windows at 2x and 1x the training length).
    pub eval_windows: usize,
    /// Checkpoints kept in the run folder (the newest ones).
    pub keep_last: usize,
    /// Seed of the data order and of the trainer's random stream.
    pub seed: u64,
    /// Non-finite steps in a row after which the run stops.
    pub max_bad_steps: u32,
    /// Peak FLOP/s of the hardware, for the utilisation estimate; `None` leaves it out.
    pub peak_flops: Option<f64>,
}

impl Default for TrainOptions {
    /// The reference recipe (shared/SPEC.md section 4) at a size a CPU can run.
    fn default() -> Self {
        TrainOptions {
            steps: 1000,
            seq_len: 256,
            batch_tokens: 8 * 256,
            micro_batch: 8,
            lr: 4e-4,
            warmup: None,
            min_lr_ratio: 0.1,
            adamw: AdamWConfig::default(),
            clip: 1.0,
            save_every: 100,
            eval_every: 100,
            eval_windows: 4,
            keep_last: 3,
            seed: 3407,
            max_bad_steps: 5,
            peak_flops: None,
        }
    }
}

impl TrainOptions {
    /// Windows per optimizer step.
    pub fn batch_windows(&self) -> usize {
        self.batch_tokens / self.seq_len.max(1)
    }

    /// Micro-batches accumulated into one optimizer step.
    pub fn accumulation(&self) -> usize {
        self.batch_windows() / self.micro_batch.max(1)
    }

    pub fn schedule(&self) -> Schedule {
        Schedule {
            peak_lr: self.lr,
            warmup_steps: self
                .warmup
                .unwrap_or_else(|| Schedule::default_warmup(self.steps)),
            total_steps: self.steps,
            min_lr_ratio: self.min_lr_ratio,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(TrainError::Options(why));
        if self.steps == 0 {
            return bad("--steps must be at least 1".into());
        }
        if self.seq_len == 0 {
            return bad("--seq-len must be at least 1".into());
        }
        if self.micro_batch == 0 {
            return bad("--micro-batch must be at least 1".into());
        }
        let micro_tokens = self.seq_len * self.micro_batch;
        if self.batch_tokens == 0 || self.batch_tokens % micro_tokens != 0 {
            return bad(format!(
                "--batch-tokens {} is not a positive multiple of --seq-len {} x --micro-batch {} = {micro_tokens}",
                self.batch_tokens, self.seq_len, self.micro_batch
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr {} must be a positive number", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "the final learning-rate ratio {} must lie in [0, 1]",
                self.min_lr_ratio
            ));
        }
        if !(self.clip.is_finite() && self.clip >= 0.0) {
            return bad(format!("--clip {} must be 0 (off) or positive", self.clip));
        }
        if self.keep_last == 0 {
            return bad("--keep-last must be at least 1".into());
        }
        if self.max_bad_steps == 0 {
            return bad("the limit of non-finite steps in a row must be at least 1".into());
        }
        if self.eval_every > 0 && self.eval_windows == 0 {
            return bad("--eval-windows must be at least 1 when validating".into());
        }
        Ok(())
    }

    /// The differences that would make a resumed run differ from the run it continues: every
    /// setting but the length of the run and its bookkeeping (checkpoint and validation
    /// intervals, kept checkpoints, the FLOP/s figure).
    pub fn resume_conflicts(&self, saved: &TrainOptions) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, now: String, then: String| {
            if now != then {
                out.push(format!("{name} is {now}, the run used {then}"));
            }
        };
        check(
            "--seq-len",
            self.seq_len.to_string(),
            saved.seq_len.to_string(),
        );
        check(
            "--batch-tokens",
            self.batch_tokens.to_string(),
            saved.batch_tokens.to_string(),
        );
        check(
            "--micro-batch",
            self.micro_batch.to_string(),
            saved.micro_batch.to_string(),
        );
        check("--lr", self.lr.to_string(), saved.lr.to_string());
        check(
            "--warmup",
            format!("{}", self.schedule().warmup_steps),
            format!("{}", saved.schedule().warmup_steps),
        );
        check(
            "the final lr ratio",
            self.min_lr_ratio.to_string(),
            saved.min_lr_ratio.to_string(),
        );
        check(
            "AdamW",
            format!("{:?}", self.adamw),
            format!("{:?}", saved.adamw),
        );
        check("--clip", self.clip.to_string(), saved.clip.to_string());
        check("--seed", self.seed.to_string(), saved.seed.to_string());
        out
    }
}
