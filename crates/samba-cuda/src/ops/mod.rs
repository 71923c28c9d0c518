//! Typed launch wrappers, one file per primitive, named as their CPU twins in
//! `samba_cpu::ops` and their kernels in `kernels/`. Each checks every buffer's length against
//! the shapes before it launches, so the `unsafe` launch itself only sees sizes it was written
//! for. Buffers are anything that derefs to device memory of the right type: a [`Buffer`]
//! (`CudaSlice`) or a slice of one (`buf.slice(a..b)`, `buf.slice_mut(a..b)`).
//!
//! Every wrapper only queues work on the device's stream; none waits for the GPU.
//!
//! [`Buffer`]: crate::Buffer

pub mod attention;
pub mod causal_conv;
pub mod cross_entropy;
pub mod embedding;
pub mod gemv;
pub mod kv_cache;
pub mod mamba_decode;
pub mod matmul;
pub(crate) mod pdl;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod selective_scan;
pub mod swiglu;

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, SyncOnDrop};

/// Threads per block of the elementwise kernels.
const THREADS: u32 = 256;

/// A grid for a grid-stride loop over `n` elements: enough blocks to fill the GPU many times,
/// capped (the kernels loop over the rest).
fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `n` blocks as one grid dimension, at most `max` (65535 for y and z, u32::MAX for x); a
/// larger count is an `Unsupported` error naming the operation and what was counted.
fn grid_dim(op: &'static str, what: &str, n: usize, max: u32) -> crate::Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|&v| v <= max)
        .ok_or_else(|| crate::CudaError::Unsupported {
            op,
            reason: format!("{what} = {n} is more than one grid dimension holds"),
        })
}

/// The kernel entry point for storage type T: "rmsnorm_fwd" -> "rmsnorm_fwd_f32".
pub(crate) fn entry<T: crate::Elem>(base: &str) -> String {
    format!("{base}_{}", T::SUFFIX)
}

/// A recurrent state read by a kernel (a buffer or a slice of one), as a trait object so an
/// `Option` of it needs no type annotation at the call site.
pub trait StateIn<T> {
    fn elems(&self) -> usize;
    fn ptr<'a>(&'a self, s: &'a CudaStream) -> (u64, SyncOnDrop<'a>);
}

/// A recurrent state written by a kernel.
pub trait StateOut<T> {
    fn elems(&self) -> usize;
    fn ptr_mut<'a>(&'a mut self, s: &'a CudaStream) -> (u64, SyncOnDrop<'a>);
}

impl<T, B: DevicePtr<T>> StateIn<T> for B {
    fn elems(&self) -> usize {
        self.len()
    }
    fn ptr<'a>(&'a self, s: &'a CudaStream) -> (u64, SyncOnDrop<'a>) {
        self.device_ptr(s)
    }
}

impl<T, B: DevicePtrMut<T>> StateOut<T> for B {
    fn elems(&self) -> usize {
        self.len()
    }
    fn ptr_mut<'a>(&'a mut self, s: &'a CudaStream) -> (u64, SyncOnDrop<'a>) {
        self.device_ptr_mut(s)
    }
}
