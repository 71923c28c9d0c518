//! One model, on the CPU or a GPU, behind one interface for inference.
//!
//! - [`Device`] parses `--device auto|cpu|cuda[:N]` and opens the GPU (kernels compiled before
//!   any work);
//! - [`Engine`] holds the model: `samba_cpu::CpuModel` (f32) or `samba_cuda::CudaModel` (bf16
//!   weights by default, f32 on request; the residual stream and logits are f32 either way);
//! - [`EngineState`] is the recurrent state of a batch of sequences on the engine's device; it
//!   clones, stacks several states into one batch and selects rows of a batch on either
//!   backend;
//! - the three ways to run the model: [`Engine::prefill`] (a prompt, logits of its last
//!   token), [`Engine::score`] (log p of every target, streamed chunk by chunk; on the GPU the
//!   log-probabilities are computed there and only they come back) and [`Engine::step`] (one
//!   decoding step of a batch; on the GPU a replayed CUDA graph).
//!
//! The evaluations (`samba-eval`) and the CLI's `score`, `generate` and `eval` run on this, so
//! every inference command takes `--device`.

mod cpu;
mod cuda;
pub mod device;
pub mod engine;
pub mod error;
pub mod state;

pub use device::{open, Device};
pub use engine::{CudaEngine, Engine, GpuDtype};
pub use error::{Result, RuntimeError};
pub use state::EngineState;
