//! The engine's operations on the CUDA backend (`samba_cuda::CudaModel<T>`, T = bf16 or f32):
//! tokens go up, and only what the caller needs comes down (the last token's logits, the
//! log-probabilities of the targets, a step's logits).

use samba_cpu::{BatchShape, CpuError};
use samba_cuda::ops::cross_entropy::cross_entropy_fwd;
use samba_cuda::{CudaActivations, CudaDecodeState, CudaModel, Elem, LogitRows};

use crate::error::Result;

/// A [`CudaDecodeState`] and the activations of its decoding step, which hold the step's
/// captured CUDA graph: kept between steps, re-planned only when the batch changes.
pub(crate) struct GpuState<T: Elem> {
    pub state: CudaDecodeState<T>,
    pub step: Option<CudaActivations<T>>,
}

impl<T: Elem> GpuState<T> {
    pub fn new(state: CudaDecodeState<T>) -> GpuState<T> {
        GpuState { state, step: None }
    }
}

/// Runs the tokens of the one sequence in `state` through the model in chunks of at most
/// `chunk`, with logits for `rows`; `after(acts, start)` runs after each chunk (its first
/// token at tokens[start]). One set of activations serves every full chunk.
fn chunked<T: Elem>(
    model: &CudaModel<T>,
    state: &mut CudaDecodeState<T>,
    tokens: &[u32],
    chunk: usize,
    rows: LogitRows,
    after: &mut dyn FnMut(&CudaActivations<T>, usize) -> Result<()>,
) -> Result<()> {
    if tokens.is_empty() {
        return Err(CpuError::EmptyInput.into());
    }
    if state.batch() != 1 {
        return Err(CpuError::BatchMismatch {
            state: state.batch(),
            batch: 1,
        }
        .into());
    }
    let chunk = chunk.max(1);
    let shape = |seq| BatchShape { batch: 1, seq };
    let mut full = if tokens.len() >= chunk {
        Some(model.activations(shape(chunk), rows)?)
    } else {
        None
    };
    for (i, part) in tokens.chunks(chunk).enumerate() {
        let mut short;
        let acts = match full.as_mut() {
            Some(a) if part.len() == chunk => a,
            _ => {
                short = model.activations(shape(part.len()), rows)?;
                &mut short
            }
        };
        model.forward_with_state(acts, part, state)?;
        after(acts, i * chunk)?;
    }
    Ok(())
}

pub(crate) fn prefill<T: Elem>(
    model: &CudaModel<T>,
    s: &mut GpuState<T>,
    tokens: &[u32],
    chunk: usize,
) -> Result<Vec<f32>> {
    let dev = model.device();
    let mut last = Vec::new();
    chunked(
        model,
        &mut s.state,
        tokens,
        chunk,
        LogitRows::Last,
        &mut |acts, start| {
            // acts.logits is [1, vocab]: the chunk's last token.
            if start + acts.shape.seq == tokens.len() {
                last = acts.logits_f32(dev)?;
            }
            Ok(())
        },
    )?;
    Ok(last)
}

/// log p(targets[i] | ...) = -(lse[i] - logits[i, targets[i]]), computed on the device per
/// chunk (`cross_entropy_fwd`); only the chunk's log-probabilities come back, never its
/// [len, vocab] logits.
pub(crate) fn score<T: Elem>(
    model: &CudaModel<T>,
    s: &mut GpuState<T>,
    inputs: &[u32],
    targets: &[u32],
    chunk: usize,
    on_chunk: &mut dyn FnMut(&[f64]),
) -> Result<Vec<f64>> {
    let dev = model.device();
    let vocab = model.config.vocab;
    let chunk = chunk.max(1);
    // targets [n] u32, loss [n] f32, lse [min(chunk, n)] f32 (scratch)
    let targets_dev = dev.upload(targets)?;
    let mut loss = dev.zeros::<f32>(targets.len().max(1))?;
    let mut lse = dev.zeros::<f32>(chunk.min(targets.len()).max(1))?;
    let mut logprobs = Vec::with_capacity(inputs.len());
    chunked(
        model,
        &mut s.state,
        inputs,
        chunk,
        LogitRows::All,
        &mut |acts, start| {
            let len = acts.shape.seq;
            let range = start..start + len;
            cross_entropy_fwd(
                dev,
                &mut loss.slice_mut(range.clone()),
                &mut lse.slice_mut(0..len),
                &acts.logits,
                &targets_dev.slice(range.clone()),
                vocab,
            )?;
            let part = dev.download(&loss.slice(range))?;
            logprobs.extend(part.iter().map(|&l| -(l as f64)));
            on_chunk(&logprobs);
            Ok(())
        },
    )?;
    Ok(logprobs)
}

/// One decoding step as a replayed CUDA graph (`CudaModel::decode_step`); logits [batch, vocab].
pub(crate) fn step<T: Elem>(
    model: &CudaModel<T>,
    s: &mut GpuState<T>,
    tokens: &[u32],
) -> Result<Vec<f32>> {
    let batch = s.state.batch();
    let mut acts = match s.step.take() {
        Some(a) if a.shape.batch == batch => a,
        _ => model.activations(BatchShape { batch, seq: 1 }, LogitRows::Last)?,
    };
    model.decode_step(&mut acts, tokens, &mut s.state)?;
    let logits = acts.logits_f32(model.device())?;
    s.step = Some(acts);
    Ok(logits)
}
