//! Feeding long inputs through the model chunk by chunk with a carried [`DecodeState`]:
//! the memory of a chunk, whatever the input's length.

use super::{Activations, BatchShape, CpuModel, DecodeState};
use crate::error::CpuError;

impl CpuModel {
    /// Runs the tokens of one sequence (`state` holds one sequence) through the model in chunks
    /// of at most `chunk` tokens, calling `on_chunk(acts, start)` after each chunk with its
    /// activations (logits [len, vocab]) and the index of its first token in `tokens`.
    /// Returns the logits of the last token.
    pub fn prefill(
        &self,
        state: &mut DecodeState,
        tokens: &[u32],
        chunk: usize,
        mut on_chunk: impl FnMut(&Activations, usize),
    ) -> Result<Vec<f32>, CpuError> {
        if tokens.is_empty() {
            return Err(CpuError::EmptyInput);
        }
        if state.batch() != 1 {
            return Err(CpuError::BatchMismatch {
                state: state.batch(),
                batch: 1,
            });
        }
        let chunk = chunk.max(1);
        // One set of activations for full chunks, one for the shorter last chunk.
        let mut full: Option<Activations> = None;
        let mut last = Vec::new();
        for (i, part) in tokens.chunks(chunk).enumerate() {
            let shape = BatchShape {
                batch: 1,
                seq: part.len(),
            };
            let mut short;
            let acts = if part.len() == chunk {
                full.get_or_insert_with(|| self.activations(shape))
            } else {
                short = self.activations(shape);
                &mut short
            };
            self.forward_with_state(acts, part, state)?;
            on_chunk(acts, i * chunk);
            let vocab = self.config.vocab;
            last = acts.logits[(part.len() - 1) * vocab..].to_vec();
        }
        Ok(last)
    }
}
