//! Errors of training. Each names the run folder, checkpoint or option at fault and what to do.

use samba_cpu::CpuError;
use samba_model::ModelError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error("invalid training options: {0}")]
    Options(String),

    #[error(transparent)]
    Model(#[from] ModelError),

    #[error("the model refused a batch: {0}")]
    Batch(#[from] CpuError),

    #[error("{path}: {why}")]
    Io { path: String, why: String },

    #[error("checkpoint {path}: {why}")]
    Checkpoint { path: String, why: String },

    #[error("{run}: {why}")]
    RunExists { run: String, why: String },

    #[error("cannot resume the run in {run}: {why}")]
    Resume { run: String, why: String },

    #[error("data: {0}")]
    Data(String),

    #[error("{0}")]
    Backend(String),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: &std::path::Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}
