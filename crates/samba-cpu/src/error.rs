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

/// Checks `tokens` against a [batch, seq] shape and a vocabulary of `vocab` ids: the input check
/// every backend runs before any work.
pub fn check_tokens(
    what: &'static str,
    tokens: &[u32],
    batch: usize,
    seq: usize,
    vocab: usize,
) -> Result<(), CpuError> {
    if tokens.is_empty() {
        return Err(CpuError::EmptyInput);
    }
    if tokens.len() != batch * seq {
        return Err(CpuError::WrongLength {
            what,
            expected: batch * seq,
            found: tokens.len(),
            batch,
            seq,
        });
    }
    match tokens.iter().position(|&t| t as usize >= vocab) {
        Some(position) => Err(CpuError::TokenOutOfVocab {
            position,
            token: tokens[position],
            vocab,
        }),
        None => Ok(()),
    }
}
