//! Errors of the model crate. Each names the file, tensor or value at fault and what was expected.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("unknown layout '{0}' (expected one of: samba, mamba-swa-mlp, mamba-mlp, mamba, llama, llama-swa, mlp2-swa-mlp)")]
    UnknownLayout(String),

    #[error("unknown preset '{name}' (expected one of: {known})")]
    UnknownPreset { name: String, known: String },

    #[error("invalid config: {field} {why}")]
    InvalidConfig { field: &'static str, why: String },

    #[error("{path}: not a valid model config: {why}")]
    ConfigJson { path: String, why: String },

    #[error("{path}: {why}")]
    Io { path: String, why: String },

    #[error("{path}: not a readable safetensors file: {why}")]
    Safetensors { path: String, why: String },

    #[error("{path}: tensor '{name}' is missing (the config describes a {layout} model with {n_layer} blocks)")]
    MissingTensor {
        path: String,
        name: String,
        layout: String,
        n_layer: usize,
    },

    #[error("{path}: unexpected tensor '{name}' (not a parameter of this config: the config and the weights disagree)")]
    UnexpectedTensor { path: String, name: String },

    #[error("{path}: tensor '{name}' has shape {found:?}, the config expects {expected:?}")]
    WrongShape {
        path: String,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("{path}: tensor '{name}' has dtype {found}, expected one of F32, BF16, F16")]
    WrongDtype {
        path: String,
        name: String,
        found: String,
    },

    #[error("{path}: tensor '{name}' holds a non-finite value at element {index}")]
    NonFinite {
        path: String,
        name: String,
        index: usize,
    },

    #[error("{path}: tensor '{name}' element {index} = {value} does not fit {dtype} (it would be stored as infinity); save in f32")]
    Overflow {
        path: String,
        name: String,
        index: usize,
        value: f32,
        dtype: &'static str,
    },

    #[error("{path}: tied tensors 'transformer.wte.weight' and 'lm_head.weight' differ (element {index}); the config says tied_embeddings = true")]
    TiedMismatch { path: String, index: usize },
}
