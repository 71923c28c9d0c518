//! The three ways the evaluations query a model, all streaming through a
//! [`DecodeState`] so memory does not grow with the input:
//! - [`score_tokens`]: log p of every next token of a sequence;
//! - [`continuation_logprobs`]: log p of a continuation given a context, the context run once
//!   and its state shared by every continuation;
//! - [`greedy_decode`]: the most likely next tokens after a prompt.

use samba_cpu::ops::cross_entropy::cross_entropy_fwd;
use samba_cpu::{BatchShape, CpuModel, DecodeState};

use crate::error::Result;

/// Checks every id of `tokens` against the model's vocabulary.
pub fn check_tokens(model: &CpuModel, tokens: &[u32]) -> Result<()> {
    model.check_tokens(
        "tokens",
        tokens,
        BatchShape {
            batch: 1,
            seq: tokens.len(),
        },
    )?;
    Ok(())
}

/// log p(tokens[i + 1] | tokens[..=i]) (natural log) for every i, streamed in chunks of `chunk`
/// tokens; `on_chunk(logprobs_so_far)` runs after each chunk (for progress).
pub fn score_tokens(
    model: &CpuModel,
    tokens: &[u32],
    chunk: usize,
    mut on_chunk: impl FnMut(&[f64]),
) -> Result<Vec<f64>> {
    check_tokens(model, tokens)?;
    if tokens.len() < 2 {
        return Ok(Vec::new());
    }
    let inputs = &tokens[..tokens.len() - 1];
    let mut state = DecodeState::new(model, 1, tokens.len());
    let vocab = model.config.vocab;
    let mut logprobs = Vec::with_capacity(inputs.len());
    model.prefill(&mut state, inputs, chunk, |acts, start| {
        // acts.logits is [len, vocab]; the targets are the inputs shifted by one.
        let len = acts.logits.len() / vocab;
        let targets = &tokens[start + 1..start + 1 + len];
        let mut losses = vec![0.0; len];
        let mut lse = vec![0.0; len];
        cross_entropy_fwd(&mut losses, &mut lse, &acts.logits, targets, vocab);
        logprobs.extend(losses.iter().map(|&l| -(l as f64)));
        on_chunk(&logprobs);
    })?;
    Ok(logprobs)
}

/// log p(token | logits) for one row of logits [vocab], in f64.
pub fn logprob_of(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits[token as usize] as f64 - max - sum.ln()
}

/// Sum of log p(continuation | context) for each continuation: the context (at least one
/// token) runs once, then each continuation from a copy of its state. Returns, per
/// continuation, the sum of its tokens' log-probabilities (0 for an empty continuation).
pub fn continuation_logprobs(
    model: &CpuModel,
    context: &[u32],
    continuations: &[Vec<u32>],
    chunk: usize,
) -> Result<Vec<f64>> {
    check_tokens(model, context)?;
    for c in continuations.iter().filter(|c| !c.is_empty()) {
        check_tokens(model, c)?;
    }
    let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
    let mut state = DecodeState::new(model, 1, context.len() + longest);
    let last = model.prefill(&mut state, context, chunk, |_, _| {})?;
    let vocab = model.config.vocab;
    continuations
        .iter()
        .map(|cont| {
            let Some((&first, rest)) = cont.split_first() else {
                return Ok(0.0);
            };
            let mut total = logprob_of(&last, first);
            if !rest.is_empty() {
                // Feed every continuation token but the last; logits row i predicts cont[i + 1].
                let mut branch = state.clone();
                model.prefill(
                    &mut branch,
                    &cont[..cont.len() - 1],
                    chunk,
                    |acts, start| {
                        for (i, row) in acts.logits.chunks(vocab).enumerate() {
                            total += logprob_of(row, cont[start + i + 1]);
                        }
                    },
                )?;
            }
            Ok(total)
        })
        .collect()
}

/// The `max_new` most likely next tokens after `prompt`, one at a time (greedy), stopping
/// early after `stop` when given.
pub fn greedy_decode(
    model: &CpuModel,
    prompt: &[u32],
    max_new: usize,
    chunk: usize,
    stop: Option<u32>,
) -> Result<Vec<u32>> {
    check_tokens(model, prompt)?;
    let mut state = DecodeState::new(model, 1, prompt.len() + max_new);
    let mut logits = model.prefill(&mut state, prompt, chunk, |_, _| {})?;
    let mut acts = model.activations(BatchShape { batch: 1, seq: 1 });
    let mut out = Vec::with_capacity(max_new);
    while out.len() < max_new {
        let next = argmax(&logits);
        out.push(next);
        if Some(next) == stop || out.len() == max_new {
            break;
        }
        model.forward_with_state(&mut acts, &[next], &mut state)?;
        logits.copy_from_slice(&acts.logits);
    }
    Ok(out)
}

/// The id of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}
