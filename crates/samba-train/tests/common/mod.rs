//! Shared by the training tests: a tiny model, corpora, and backends that misbehave on cue.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use samba_cpu::{BatchShape, CpuModel};
use samba_model::init::init_params;
use samba_model::preset::preset;
use samba_model::{Config, ParamLayout};
use samba_train::{AdamWStep, CpuTrainBackend, TrainBackend, TrainError, TrainOptions};

/// The tiny preset with `vocab` tokens, initialised from seed 7.
pub fn tiny_backend(vocab: usize) -> CpuTrainBackend {
    let mut config: Config = preset("tiny").unwrap();
    config.vocab = vocab;
    let params = init_params(&ParamLayout::new(&config), 7);
    CpuTrainBackend::new(CpuModel::new(config, params))
}

/// `n` tokens in [0, vocab) with some structure (a noisy repeating pattern), seeded.
pub fn patterned_tokens(n: usize, vocab: u32, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            if rng.random_range(0..4) == 0 {
                rng.random_range(0..vocab)
            } else {
                (i as u32 * 7 + (i as u32 / 5)) % vocab
            }
        })
        .collect()
}

/// Small, fast options for loop tests: 2 micro-batches of 2 windows of 16 tokens per step.
pub fn small_options(steps: u64) -> TrainOptions {
    TrainOptions {
        steps,
        seq_len: 16,
        batch_tokens: 64,
        micro_batch: 2,
        lr: 1e-2,
        warmup: Some(2),
        save_every: 3,
        eval_every: 4,
        eval_windows: 1,
        keep_last: 2,
        ..TrainOptions::default()
    }
}

/// A backend that behaves like the inner one, with faults on chosen steps (1-based, counted by
/// `zero_grads`, which the loop calls once at the start of every step).
pub struct Faulty<B: TrainBackend> {
    pub inner: B,
    pub step: u64,
    /// Steps whose loss comes back NaN.
    pub nan_loss: HashSet<u64>,
    /// Steps whose gradient norm comes back infinite.
    pub inf_grad: HashSet<u64>,
    /// From this step on, every loss is NaN.
    pub nan_from: Option<u64>,
    /// At this step `accumulate` fails, as a crash would.
    pub crash_at: Option<u64>,
    /// Set this flag during this step (a Ctrl-C arriving mid-step).
    pub stop_at: Option<(u64, Arc<AtomicBool>)>,
}

impl<B: TrainBackend> Faulty<B> {
    pub fn new(inner: B) -> Self {
        Faulty {
            inner,
            step: 0,
            nan_loss: HashSet::new(),
            inf_grad: HashSet::new(),
            nan_from: None,
            crash_at: None,
            stop_at: None,
        }
    }
}

impl<B: TrainBackend> TrainBackend for Faulty<B> {
    fn config(&self) -> &Config {
        self.inner.config()
    }
    fn zero_grads(&mut self) {
        self.step += 1;
        if let Some((at, flag)) = &self.stop_at {
            if *at == self.step {
                flag.store(true, Ordering::SeqCst);
            }
        }
        self.inner.zero_grads()
    }
    fn accumulate(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        shape: BatchShape,
        weight: f32,
    ) -> Result<f32, TrainError> {
        if self.crash_at == Some(self.step) {
            return Err(TrainError::Backend("simulated crash".into()));
        }
        let loss = self.inner.accumulate(inputs, targets, shape, weight)?;
        let nan =
            self.nan_loss.contains(&self.step) || self.nan_from.is_some_and(|s| self.step >= s);
        Ok(if nan { f32::NAN } else { loss })
    }
    fn evaluate(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        shape: BatchShape,
    ) -> Result<f32, TrainError> {
        self.inner.evaluate(inputs, targets, shape)
    }
    fn grad_norm(&mut self) -> f32 {
        if self.inf_grad.contains(&self.step) {
            f32::INFINITY
        } else {
            self.inner.grad_norm()
        }
    }
    fn adamw_step(&mut self, step: &AdamWStep) {
        self.inner.adamw_step(step)
    }
    fn params(&self) -> Vec<f32> {
        self.inner.params()
    }
    fn set_params(&mut self, params: &[f32]) -> Result<(), TrainError> {
        self.inner.set_params(params)
    }
    fn optimizer_state(&self) -> (Vec<f32>, Vec<f32>) {
        self.inner.optimizer_state()
    }
    fn load_optimizer_state(&mut self, m: &[f32], v: &[f32]) -> Result<(), TrainError> {
        self.inner.load_optimizer_state(m, v)
    }
}

/// Bit patterns, so that equality means bit-identical (and NaN compares equal to itself).
pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}
