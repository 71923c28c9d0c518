//! The one error type of this crate. Each variant names the file (and line, where there is one)
//! and says what to do about it; bad *documents* are not errors but [`crate::Skipped`] items.

use std::path::PathBuf;

/// Everything that can stop a data command.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    #[error("tokenizer: {0}")]
    Tokenize(String),

    #[error("tokenizer has no end-of-document token: add one of {candidates} as a special token")]
    NoEos { candidates: String },

    #[error(
        "a vocabulary of {vocab_size} tokens does not fit {dtype} shards (at most {max} ids): \
         use u32 shards or a smaller vocabulary"
    )]
    VocabTooLarge {
        vocab_size: usize,
        dtype: &'static str,
        max: u64,
    },

    #[error(
        "token id {id} does not fit {dtype} shards (at most {max} ids): the tokenizer produced \
         an id outside the vocabulary it reports; use u32 shards"
    )]
    TokenOutOfRange {
        id: u32,
        dtype: &'static str,
        max: u64,
    },

    #[error("{}: invalid shard index: {message}", path.display())]
    IndexInvalid { path: PathBuf, message: String },

    #[error(
        "{}: shard index does not match its files: {message}; prepare the data again",
        path.display()
    )]
    IndexMismatch { path: PathBuf, message: String },

    #[error("no documents found in the inputs ({inputs}); {skipped} items were skipped")]
    NoDocuments { inputs: String, skipped: usize },

    #[error("input {}: no such file or folder", path.display())]
    MissingInput { path: PathBuf },

    #[error(
        "{} already exists: choose another output folder, or replace an earlier data folder \
         with --force",
        path.display()
    )]
    OutputExists { path: PathBuf },

    #[error("invalid setting: {0}")]
    Config(String),

    #[error(
        "the {split} split has {tokens} tokens in its longest shard, too few for one window of \
         seq_len + 1 = {window} tokens"
    )]
    TooFewTokens {
        split: String,
        tokens: u64,
        window: usize,
    },

    #[error("cannot resume: {0}")]
    Resume(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
