//! What can go wrong when a model runs: the device, the model folder, the input, the states.

use samba_cpu::CpuError;
use samba_cuda::CudaError;
use samba_model::ModelError;
use thiserror::Error;

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("--device '{spec}': expected auto, cpu, cuda or cuda:N")]
    BadDevice { spec: String },

    #[error("--device {spec}: {error}")]
    OpenDevice { spec: String, error: CudaError },

    #[error("unknown GPU storage type '{0}': expected bf16 or f32")]
    BadDtype(String),

    /// Bad input (token ids, lengths, batch, context cap), the same on every backend.
    #[error(transparent)]
    Input(#[from] CpuError),

    #[error(transparent)]
    Cuda(CudaError),

    #[error(transparent)]
    Model(#[from] ModelError),

    #[error("the parameter buffer holds {found} values but the model's layout needs {expected}")]
    ParamCount { expected: usize, found: usize },

    #[error("{inputs} inputs but {targets} targets: scoring needs one target per input")]
    TargetCount { inputs: usize, targets: usize },

    #[error(
        "a {state} state given to the {engine} engine: states belong to the engine that made them"
    )]
    StateMismatch { state: &'static str, engine: String },

    #[error("row {row} is outside the batch of {batch} sequences")]
    NoSuchRow { row: usize, batch: usize },

    #[error("no states to stack")]
    NothingToStack,
}

/// The GPU's input errors become the same `Input` errors as the CPU's.
impl From<CudaError> for RuntimeError {
    fn from(e: CudaError) -> RuntimeError {
        match e {
            CudaError::Input(e) => RuntimeError::Input(e),
            e => RuntimeError::Cuda(e),
        }
    }
}
