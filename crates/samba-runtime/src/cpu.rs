//! The engine's operations on the CPU backend (`samba_cpu::CpuModel`, f32).

use samba_cpu::ops::cross_entropy::cross_entropy_fwd;
use samba_cpu::{Activations, BatchShape, CpuModel, DecodeState};

use crate::error::Result;

/// A [`DecodeState`] and the activations of its last decoding step (re-planned only when the
/// batch changes).
pub(crate) struct CpuState {
    pub state: DecodeState,
    pub step: Option<Activations>,
}

impl CpuState {
    pub fn new(state: DecodeState) -> CpuState {
        CpuState { state, step: None }
    }
}

/// The tokens of one sequence through the model in chunks; the logits of the last token.
pub(crate) fn prefill(
    model: &CpuModel,
    s: &mut CpuState,
    tokens: &[u32],
    chunk: usize,
) -> Result<Vec<f32>> {
    Ok(model.prefill(&mut s.state, tokens, chunk, |_, _| {})?)
}

/// log p(targets[i] | the state, inputs[..=i]) for every i, chunk by chunk:
///   logprob[i] = logits[i, targets[i]] - logsumexp(logits[i, :]) = -loss[i].
pub(crate) fn score(
    model: &CpuModel,
    s: &mut CpuState,
    inputs: &[u32],
    targets: &[u32],
    chunk: usize,
    on_chunk: &mut dyn FnMut(&[f64]),
) -> Result<Vec<f64>> {
    let vocab = model.config.vocab;
    let mut logprobs = Vec::with_capacity(inputs.len());
    model.prefill(&mut s.state, inputs, chunk, |acts, start| {
        // acts.logits is [len, vocab]
        let len = acts.shape.rows();
        let mut losses = vec![0.0; len];
        let mut lse = vec![0.0; len];
        let targets = &targets[start..start + len];
        cross_entropy_fwd(&mut losses, &mut lse, &acts.logits, targets, vocab);
        logprobs.extend(losses.iter().map(|&l| -(l as f64)));
        on_chunk(&logprobs);
    })?;
    Ok(logprobs)
}

/// One decoding step: sequence b takes tokens[b]; logits [batch, vocab].
pub(crate) fn step(model: &CpuModel, s: &mut CpuState, tokens: &[u32]) -> Result<Vec<f32>> {
    let batch = s.state.batch();
    let mut acts = match s.step.take() {
        Some(a) if a.shape.batch == batch => a,
        _ => model.activations(BatchShape { batch, seq: 1 }),
    };
    model.forward_with_state(&mut acts, tokens, &mut s.state)?;
    let logits = acts.logits.clone();
    s.step = Some(acts);
    Ok(logits)
}
