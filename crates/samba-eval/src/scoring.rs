//! The three ways the evaluations query a model, on the CPU or a GPU ([`Engine`]), all
//! streaming through a recurrent state so memory does not grow with the input:
//! - [`score_tokens`]: log p of every next token of a sequence;
//! - [`continuation_logprobs`]: log p of a continuation given a context, the context run once
//!   and its state cloned for every continuation;
//! - [`greedy_decode`]: the most likely next tokens after a prompt.

use samba_runtime::Engine;

use crate::error::Result;

/// Checks every id of `tokens` against the model's vocabulary (at least one token).
pub fn check_tokens(engine: &Engine, tokens: &[u32]) -> Result<()> {
    engine.check_tokens("tokens", tokens)?;
    Ok(())
}

/// log p(tokens[i + 1] | tokens[..=i]) (natural log) for every i, streamed in chunks of `chunk`
/// tokens; `on_chunk(logprobs_so_far)` runs after each chunk (for progress).
pub fn score_tokens(
    engine: &Engine,
    tokens: &[u32],
    chunk: usize,
    on_chunk: impl FnMut(&[f64]),
) -> Result<Vec<f64>> {
    check_tokens(engine, tokens)?;
    if tokens.len() < 2 {
        return Ok(Vec::new());
    }
    let mut state = engine.new_state(1, tokens.len())?;
    // The targets are the inputs shifted by one.
    let (inputs, targets) = (&tokens[..tokens.len() - 1], &tokens[1..]);
    Ok(engine.score(&mut state, inputs, targets, chunk, on_chunk)?)
}

/// log p(token | logits) for one row of logits [vocab], in f64.
pub fn logprob_of(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits[token as usize] as f64 - max - sum.ln()
}

/// Sum of log p(continuation | context) for each continuation: the context (at least one
/// token) runs once, then each continuation from a clone of its state. Returns, per
/// continuation, the sum of its tokens' log-probabilities (0 for an empty continuation).
pub fn continuation_logprobs(
    engine: &Engine,
    context: &[u32],
    continuations: &[Vec<u32>],
    chunk: usize,
) -> Result<Vec<f64>> {
    check_tokens(engine, context)?;
    for c in continuations.iter().filter(|c| !c.is_empty()) {
        check_tokens(engine, c)?;
    }
    let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
    let mut state = engine.new_state(1, context.len() + longest)?;
    let last = engine.prefill(&mut state, context, chunk)?;
    continuations
        .iter()
        .map(|cont| {
            let Some((&first, rest)) = cont.split_first() else {
                return Ok(0.0);
            };
            let mut total = logprob_of(&last, first);
            if !rest.is_empty() {
                // Feed every continuation token but the last; each predicts the one after it.
                let mut branch = state.try_clone(engine)?;
                let inputs = &cont[..cont.len() - 1];
                let lp = engine.score(&mut branch, inputs, rest, chunk, |_| {})?;
                total += lp.iter().sum::<f64>();
            }
            Ok(total)
        })
        .collect()
}

/// The `max_new` most likely next tokens after `prompt`, one at a time (greedy), stopping
/// early after `stop` when given.
pub fn greedy_decode(
    engine: &Engine,
    prompt: &[u32],
    max_new: usize,
    chunk: usize,
    stop: Option<u32>,
) -> Result<Vec<u32>> {
    check_tokens(engine, prompt)?;
    let mut state = engine.new_state(1, prompt.len() + max_new)?;
    let mut logits = engine.prefill(&mut state, prompt, chunk)?;
    let mut out = Vec::with_capacity(max_new);
    while out.len() < max_new {
        let next = argmax(&logits);
        out.push(next);
        if Some(next) == stop || out.len() == max_new {
            break;
        }
        logits = engine.step(&mut state, &[next])?;
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
