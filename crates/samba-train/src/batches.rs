//! Where the trainer's tokens come from: windows of seq_len + 1 tokens (inputs are the first
//! seq_len, targets the last seq_len), with a position that a checkpoint saves and a resumed
//! run restores, so the resumed run sees exactly the windows the uninterrupted one would have.
//!
//! [`MemoryWindows`] and [`MemoryValidation`] serve a token list held in memory (tests, small
//! corpora); the data crate's shards plug in through the same traits.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The training stream: an endless sequence of windows.
pub trait BatchSource {
    /// Input tokens per window; a window holds `seq_len() + 1` tokens.
    fn seq_len(&self) -> usize;
    /// Fills `out` [batch, seq_len + 1] (row-major) with the next `batch` windows.
    fn next_windows(&mut self, out: &mut [u32]) -> Result<()>;
    /// Everything needed to continue from here, as JSON for `trainer.json`.
    fn position(&self) -> serde_json::Value;
    /// Continues from a position that [`position`](Self::position) returned on the same data.
    fn restore(&mut self, position: &serde_json::Value) -> Result<()>;
}

/// Held-out windows for validation, the same ones every time they are asked for.
pub trait ValidationSource {
    /// Up to `max_count` windows of `seq_len + 1` tokens, [count, seq_len + 1] row-major; at
    /// least one, or an error saying the held-out data is too short.
    fn windows(&mut self, seq_len: usize, max_count: usize) -> Result<Vec<u32>>;
}

/// Windows at uniformly random starts in a token list, drawn from a seeded ChaCha8 stream.
pub struct MemoryWindows {
    tokens: Vec<u32>,
    seq_len: usize,
    seed: u64,
    rng: ChaCha8Rng,
}

/// The whole state of a [`MemoryWindows`]: the seed and how far its stream has been read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPosition {
    pub kind: String,
    pub seed: u64,
    pub tokens: usize,
    /// ChaCha8's word position (a u128, as a decimal string: JSON numbers stop at 2^53).
    pub word_pos: String,
}

const MEMORY_KIND: &str = "memory-windows";

impl MemoryWindows {
    pub fn new(tokens: Vec<u32>, seq_len: usize, seed: u64) -> Result<MemoryWindows> {
        if seq_len == 0 {
            return Err(TrainError::Options("seq_len must be at least 1".into()));
        }
        if tokens.len() < seq_len + 1 {
            return Err(TrainError::Data(format!(
                "{} tokens cannot fill one window of seq_len + 1 = {} tokens",
                tokens.len(),
                seq_len + 1
            )));
        }
        Ok(MemoryWindows {
            tokens,
            seq_len,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }
}

impl BatchSource for MemoryWindows {
    fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn next_windows(&mut self, out: &mut [u32]) -> Result<()> {
        let window = self.seq_len + 1;
        if out.len() % window != 0 {
            return Err(TrainError::Data(format!(
                "a batch buffer of {} tokens is not a whole number of {window}-token windows",
                out.len()
            )));
        }
        let last_start = self.tokens.len() - window;
        for row in out.chunks_exact_mut(window) {
            let start = self.rng.random_range(0..=last_start);
            row.copy_from_slice(&self.tokens[start..start + window]);
        }
        Ok(())
    }

    fn position(&self) -> serde_json::Value {
        let position = MemoryPosition {
            kind: MEMORY_KIND.to_string(),
            seed: self.seed,
            tokens: self.tokens.len(),
            word_pos: self.rng.get_word_pos().to_string(),
        };
        serde_json::to_value(position).expect("a plain struct serialises")
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<()> {
        let p: MemoryPosition = serde_json::from_value(position.clone())
            .map_err(|e| TrainError::Data(format!("not an in-memory data position: {e}")))?;
        if p.kind != MEMORY_KIND || p.seed != self.seed || p.tokens != self.tokens.len() {
            return Err(TrainError::Data(format!(
                "the saved position is for {} over {} tokens with seed {}, this source is {MEMORY_KIND} over {} tokens with seed {}",
                p.kind,
                p.tokens,
                p.seed,
                self.tokens.len(),
                self.seed
            )));
        }
        let word_pos: u128 = p
            .word_pos
            .parse()
            .map_err(|e| TrainError::Data(format!("word_pos '{}': {e}", p.word_pos)))?;
        self.rng = ChaCha8Rng::seed_from_u64(self.seed);
        self.rng.set_word_pos(word_pos);
        Ok(())
    }
}

/// Held-out windows cut one after the other from the start of a token list; neighbours share
/// one token so that every token after the first is a target once.
pub struct MemoryValidation {
    tokens: Vec<u32>,
}

impl MemoryValidation {
    pub fn new(tokens: Vec<u32>) -> MemoryValidation {
        MemoryValidation { tokens }
    }
}

impl ValidationSource for MemoryValidation {
    fn windows(&mut self, seq_len: usize, max_count: usize) -> Result<Vec<u32>> {
        let available = self.tokens.len().saturating_sub(1) / seq_len.max(1);
        let count = available.min(max_count);
        if count == 0 || seq_len == 0 {
            return Err(TrainError::Data(format!(
                "the held-out data ({} tokens) cannot fill one validation window of {} tokens",
                self.tokens.len(),
                seq_len + 1
            )));
        }
        let mut out = Vec::with_capacity(count * (seq_len + 1));
        for j in 0..count {
            out.extend_from_slice(&self.tokens[j * seq_len..j * seq_len + seq_len + 1]);
        }
        Ok(out)
    }
}

/// Splits a token list into (train, held-out): the last `fraction` of the tokens are held out.
pub fn split_held_out(mut tokens: Vec<u32>, fraction: f64) -> (Vec<u32>, Vec<u32>) {
    let held = ((tokens.len() as f64 * fraction).round() as usize).min(tokens.len());
    let val = tokens.split_off(tokens.len() - held);
    (tokens, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_windows_resume_where_they_stopped() {
        let tokens: Vec<u32> = (0..1000).collect();
        let mut a = MemoryWindows::new(tokens.clone(), 7, 5).unwrap();
        let mut buf = vec![0u32; 3 * 8];
        a.next_windows(&mut buf).unwrap();
        let saved = a.position();
        a.next_windows(&mut buf).unwrap();
        let expected = buf.clone();

        let mut b = MemoryWindows::new(tokens, 7, 5).unwrap();
        b.restore(&saved).unwrap();
        b.next_windows(&mut buf).unwrap();
        assert_eq!(buf, expected);
        // Every row is a run of consecutive tokens.
        for row in buf.chunks(8) {
            assert!(row.windows(2).all(|w| w[1] == w[0] + 1));
        }
    }

    #[test]
    fn memory_windows_refuse_another_seed() {
        let tokens: Vec<u32> = (0..100).collect();
        let a = MemoryWindows::new(tokens.clone(), 7, 5).unwrap();
        let mut b = MemoryWindows::new(tokens, 7, 6).unwrap();
        assert!(b.restore(&a.position()).is_err());
    }

    #[test]
    fn validation_windows_share_their_edges() {
        let mut v = MemoryValidation::new((0..20).collect());
        let w = v.windows(4, 10).unwrap();
        assert_eq!(w.len(), 4 * 5);
        assert_eq!(&w[..10], &[0, 1, 2, 3, 4, 4, 5, 6, 7, 8]);
        assert!(v.windows(40, 1).is_err());
    }
}
