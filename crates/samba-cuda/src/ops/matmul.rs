//! Dense layers on cuBLAS: out = inp @ w^T, weights stored as PyTorch's nn.Linear.weight
//! [out_features, in_features], as the CPU's `linear_fwd`.
//!
//! f32 runs cublasSgemm with the default math mode (no TF32: exact f32 products, comparable
//! with the CPU at 1e-5); bf16 runs cublasGemmEx with bf16 operands and output and f32
//! accumulation (CUBLAS_COMPUTE_32F).

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use samba_cpu::ops::matmul::LinearDims;

use crate::error::{check_len, to_i32, Result};
use crate::{CudaDevice, CudaError, Elem};

/// out [rows, out_features] = inp [rows, in_features] @ w^T, w [out_features, in_features].
///
/// cuBLAS is column-major: a row-major [r, c] matrix is a column-major [c, r] one. So this is
/// the column-major out^T [out, rows] = w^T... i.e. C = op(A) B with A = w (column-major
/// [in, out], ld = in, transposed), B = inp (column-major [in, rows], ld = in), m = out,
/// n = rows, k = in.
pub fn linear_fwd<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    inp: &impl DevicePtr<T>,
    w: &impl DevicePtr<T>,
    dims: LinearDims,
) -> Result<()>
where
    CudaBlas: Gemm<T>,
{
    const OP: &str = "linear_fwd";
    let LinearDims {
        rows,
        in_features,
        out_features,
    } = dims;
    check_len(
        OP,
        "inp",
        inp.len(),
        rows * in_features,
        "[rows, in_features]",
    )?;
    check_len(
        OP,
        "w",
        w.len(),
        out_features * in_features,
        "[out_features, in_features]",
    )?;
    check_len(
        OP,
        "out",
        out.len(),
        rows * out_features,
        "[rows, out_features]",
    )?;
    if rows == 0 || out_features == 0 {
        return Ok(());
    }
    if in_features == 0 {
        return dev.fill(out, T::from_f32(0.0));
    }
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: to_i32(OP, "out_features", out_features)?,
        n: to_i32(OP, "rows", rows)?,
        k: to_i32(OP, "in_features", in_features)?,
        alpha: T::from_f32(1.0),
        lda: to_i32(OP, "in_features", in_features)?,
        ldb: to_i32(OP, "in_features", in_features)?,
        beta: T::from_f32(0.0),
        ldc: to_i32(OP, "out_features", out_features)?,
    };
    let blas = dev.blas()?;
    // SAFETY: the sizes match the checked lengths: cuBLAS reads m * k of w, k * n of inp and
    // writes m * n of out, all in the device's stream; out is borrowed mutably, so it aliases
    // neither operand.
    unsafe { blas.gemm(cfg, w, inp, out) }.map_err(|source| CudaError::Cublas {
        what: "running linear_fwd's GEMM",
        source,
    })
}
