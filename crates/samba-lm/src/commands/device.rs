//! `--device auto|cpu|cuda[:N]`: where a command runs (parsed and opened by
//! `samba_runtime::Device`), and the flags every inference command shares.

use anyhow::Result;
use clap::Args;
use samba_model::LoadedModel;
pub use samba_runtime::{open, Device};
use samba_runtime::{Engine, GpuDtype};
use serde::Serialize;

/// `--device` and `--gpu-dtype`.
#[derive(Args, Debug, Clone, Serialize)]
pub struct DeviceArgs {
    /// Where the model runs: auto (the first GPU when there is one, else the CPU), cpu, cuda or
    /// cuda:N.
    #[arg(long, default_value = "auto", value_name = "auto|cpu|cuda[:N]")]
    pub device: String,
    /// How a GPU stores the weights: bf16 (what the GPU backend is built for) or f32 (matches
    /// the CPU to ~1e-5, twice the memory). Ignored on the CPU.
    #[arg(long, default_value = "bf16", value_name = "bf16|f32")]
    pub gpu_dtype: GpuDtype,
}

impl DeviceArgs {
    /// Opens the device, puts the model on it and says where it runs on stderr
    /// ("device: cuda:0 NVIDIA H200 (bf16)").
    pub fn engine(&self, loaded: LoadedModel) -> Result<Engine> {
        let device = open(&self.device)?;
        let engine = Engine::from_loaded(loaded, &device, self.gpu_dtype)?;
        eprintln!("device: {}", engine.describe());
        Ok(engine)
    }
}
