//! The CPU backend: every primitive of the model in plain f32 Rust (multi-threaded with rayon,
//! GEMMs from the `gemm` crate), each forward right above its hand-written backward, and the
//! whole model's forward and backward built from them.
//!
//! Conventions of every primitive:
//! - buffers are row-major slices with their shapes written as `[batch, seq, dim]` in the docs;
//! - backward functions *add* into their gradient outputs (`+=`), so callers zero gradients
//!   once and sublayers that share an input simply accumulate.

pub mod error;
pub mod model;
pub mod ops;
pub mod testing;

pub use error::CpuError;
pub use model::{ActivationStorage, Activations, BatchShape, CpuModel, DecodeState};
