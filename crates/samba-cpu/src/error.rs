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
}
