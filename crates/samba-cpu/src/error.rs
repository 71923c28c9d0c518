//! Errors the CPU backend returns for user input (token ids, shapes of a request).

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum CpuError {
    #[error("the input is empty: at least one token is needed")]
    EmptyInput,

    #[error("token id {token} at position {position} is outside the vocabulary (the model has {vocab} tokens: ids 0..{vocab})")]
    TokenOutOfVocab {
        position: usize,
        token: u32,
        vocab: usize,
    },

    #[error("{what}: expected {expected} tokens (batch {batch} x seq {seq}), got {found}")]
    WrongLength {
        what: &'static str,
        expected: usize,
        found: usize,
        batch: usize,
        seq: usize,
    },

    #[error("the context is full: a sequence at position {position} cannot take {tokens} more tokens (full attention keeps at most {max_context} positions; raise the cap with --max-context or use a layout with sliding-window attention)")]
    ContextFull {
        position: usize,
        tokens: usize,
        max_context: usize,
    },

    #[error("the decode state holds {state} sequences but the batch has {batch}")]
    BatchMismatch { state: usize, batch: usize },
}
