//! The Samba model definition, independent of any backend: configuration and presets, the
//! parameter layout with the reference checkpoint names, the reference initialization, and
//! model folders (`config.json` + `model.safetensors` [+ `tokenizer.json`]).
//!
//! The numerics (forward, backward, decoding) live in the backend crates (`samba-cpu`).

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod flops;
pub mod init;
pub mod layout;
pub mod preset;

pub use checkpoint::LoadedModel;
pub use config::{Config, Layout, Sublayer};
pub use error::ModelError;
pub use layout::{ParamLayout, TensorId};
