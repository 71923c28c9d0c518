//! `--device auto|cpu|cuda[:N]`: where a model runs.

use std::sync::Arc;

use samba_cuda::CudaDevice;

use crate::error::{Result, RuntimeError};

/// A parsed and opened `--device`.
#[derive(Debug, Clone)]
pub enum Device {
    Cpu,
    Cuda(Arc<CudaDevice>),
}

/// `auto` picks the first GPU when one is there, else the CPU; `cuda` is `cuda:0`; `cuda[:N]`
/// without that GPU is an error naming it. A GPU's kernels are compiled (or read from the disk
/// cache) here, so that no NVRTC time lands inside a measurement or a first request.
pub fn open(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" if samba_cuda::cuda_available() => open("cuda:0"),
        "auto" => Ok(Device::Cpu),
        "cuda" => open("cuda:0"),
        _ => {
            let bad = || RuntimeError::BadDevice {
                spec: spec.to_string(),
            };
            let ordinal: usize = spec
                .strip_prefix("cuda:")
                .ok_or_else(bad)?
                .parse()
                .map_err(|_| bad())?;
            let opened = |error| RuntimeError::OpenDevice {
                spec: spec.to_string(),
                error,
            };
            let dev = CudaDevice::open(ordinal).map_err(opened)?;
            dev.load_all_kernels().map_err(opened)?;
            Ok(Device::Cuda(Arc::new(dev)))
        }
    }
}

impl Device {
    /// See [`open`].
    pub fn open(spec: &str) -> Result<Device> {
        open(spec)
    }

    /// "cpu", or "cuda:0 NVIDIA H200".
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(dev) => format!("cuda:{} {}", dev.ordinal(), dev.name()),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}
