//! What can go wrong in an evaluation; every variant names the file or flag at fault.

use std::path::PathBuf;

use thiserror::Error;

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum EvalError {
    #[error("{path}: {why}")]
    Io { path: PathBuf, why: String },

    #[error(transparent)]
    Model(#[from] samba_model::ModelError),

    #[error(transparent)]
    Cpu(#[from] samba_cpu::CpuError),

    /// The model on its device: input errors, GPU failures.
    #[error(transparent)]
    Runtime(#[from] samba_runtime::RuntimeError),

    #[error(transparent)]
    Data(#[from] samba_data::DataError),

    #[error("{model}: the model has a vocabulary of {model_vocab} tokens but the tokenizer {tokenizer} produces ids up to {tokenizer_vocab}; evaluate with the tokenizer the model was trained with")]
    VocabMismatch {
        model: PathBuf,
        model_vocab: usize,
        tokenizer: PathBuf,
        tokenizer_vocab: usize,
    },

    #[error("{model}: the model folder has no tokenizer.json; put the tokenizer the model was trained with there")]
    NoTokenizer { model: PathBuf },

    #[error("{path}: not a multiple-choice task file this tool reads ({why}); expected a bigbench task.json ({{\"examples\": [{{\"input\", \"target_scores\"}}]}}) or JSON Lines of {{\"context\", \"choices\", \"answer\"}}")]
    UnknownTaskFormat { path: PathBuf, why: String },

    #[error("{path}: {what}")]
    BadTask { path: PathBuf, what: String },

    #[error(
        "{path}: the document has {tokens} tokens; at least 2 are needed to measure perplexity"
    )]
    DocumentTooShort { path: PathBuf, tokens: usize },

    #[error("{0}")]
    Options(String),
}

impl EvalError {
    pub fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> EvalError {
        EvalError::Io {
            path: path.into(),
            why: e.to_string(),
        }
    }
}
