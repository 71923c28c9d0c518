//! `--device auto|cpu|cuda[:N]`: where a command runs.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use samba_cuda::CudaDevice;

/// A parsed `--device`.
pub enum Device {
    Cpu,
    Cuda(Arc<CudaDevice>),
}

/// `auto` picks the first GPU when one is there, else the CPU; `cuda` without a GPU is an error.
pub fn open(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" if samba_cuda::cuda_available() => open("cuda:0"),
        "auto" => Ok(Device::Cpu),
        "cuda" => open("cuda:0"),
        _ => {
            let Some(ordinal) = spec.strip_prefix("cuda:") else {
                bail!("--device '{spec}': expected auto, cpu, cuda or cuda:N");
            };
            let ordinal: usize = ordinal
                .parse()
                .with_context(|| format!("--device '{spec}': N in cuda:N must be a GPU number"))?;
            let dev = CudaDevice::open(ordinal).with_context(|| format!("--device {spec}"))?;
            // Compile (or read from the disk cache) every kernel now, so that no NVRTC time
            // lands inside a measurement or a first request.
            dev.load_all_kernels()
                .context("compiling the CUDA kernels")?;
            Ok(Device::Cuda(Arc::new(dev)))
        }
    }
}
