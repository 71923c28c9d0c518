//! The CUDA backend of samba-lm: the model's primitives as CUDA kernels, checked against their
//! CPU twins in `samba-cpu`.
//!
//! - [`CudaDevice`] opens a GPU through the driver loaded at run time (no CUDA is linked: every
//!   build has this backend, and a machine without a GPU gets a typed error, not a panic);
//! - [`compile`] holds the kernel sources (`kernels/*.cu`, embedded), compiled by NVRTC for the
//!   device's architecture on first use and cached on disk;
//! - [`ops`] has one typed, shape-checked launch wrapper per primitive, named as on the CPU
//!   (`rmsnorm_fwd`, `attention_fwd`, `selective_scan_fwd`, ...), in f32 and bf16 storage with
//!   f32 arithmetic; GEMMs go through cuBLAS;
//! - [`bench`] times prefill and decoding against floors from [`Ceilings`] (`ceilings`): the
//!   copy bandwidth and bf16 GEMM rate measured on the device the benchmark runs on.
//!
//! `unsafe` appears only where a kernel or a cuBLAS call is launched, after the shapes are
//! checked.

pub mod bench;
pub mod ceilings;
pub mod compile;
pub mod device;
pub mod error;
pub mod model;
pub mod ops;

pub use ceilings::Ceilings;
pub use device::{cuda_available, device_count, driver_present, Buffer, CudaDevice, Elem};
pub use error::{CudaError, Result};
pub use model::{CudaActivations, CudaDecodeState, CudaModel, DecodeKernels, LogitRows};
