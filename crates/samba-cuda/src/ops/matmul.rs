//! Dense layers on cuBLAS: out = inp @ w^T, weights stored as PyTorch's nn.Linear.weight
//! [out_features, in_features], as the CPU's `linear_fwd`.
//!
//! f32 runs cublasSgemm with the default math mode (no TF32: exact f32 products, comparable
//! with the CPU at 1e-5); bf16 runs cublasGemmEx with bf16 operands and output and f32
//! accumulation (CUBLAS_COMPUTE_32F).

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use samba_cpu::ops::matmul::LinearDims;

use super::gemv::{gemv_applies, gemv_fwd, GemvInput, GemvOut};
use crate::error::{check_len, check_rows, to_i32, Result};
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

/// Where a dense layer writes: rows of T, or rows of f32 (the logits), optionally added to what
/// is there (the residual stream: x += branch in the same pass).
enum Dest {
    Elem,
    F32 { accumulate: bool },
}

/// out[r, :out_features] (rows `out_stride` apart) = inp[r, :in_features] (rows `inp_stride`
/// apart) @ w^T, w [out_features, in_features] contiguous: a dense layer that reads its input
/// from, or writes its output into, columns of a wider buffer (Mamba's dt_proj reads dt_low in
/// place from x_proj's [dt_low | B | C]). cublasGemmEx with f32 accumulation (f32 in the
/// default math mode: no TF32); up to 4 rows (decoding) in f32 run the GEMV kernel
/// ([`use_gemv`]).
#[allow(clippy::too_many_arguments)]
pub fn linear_fwd_strided<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    out_stride: usize,
    inp: &impl DevicePtr<T>,
    inp_stride: usize,
    w: &impl DevicePtr<T>,
    dims: LinearDims,
) -> Result<()> {
    check_strided(
        "linear_fwd_strided",
        out.len(),
        out_stride,
        inp.len(),
        inp_stride,
        w.len(),
        dims,
    )?;
    if use_gemv::<T>(dims) {
        let out = GemvOut::Elem {
            out,
            stride: out_stride,
        };
        let input = GemvInput::Rows {
            inp,
            stride: inp_stride,
        };
        return gemv_fwd(dev, out, input, w, dims);
    }
    let s = dev.stream();
    let (o_p, _g0) = out.device_ptr_mut(s);
    let (i_p, _g1) = inp.device_ptr(s);
    let (w_p, _g2) = w.device_ptr(s);
    dense::<T>(dev, o_p, out_stride, i_p, inp_stride, w_p, dims, Dest::Elem)
}

/// [`linear_fwd_strided`] with an f32 output: `out` = inp @ w^T, or with `accumulate`
/// `out` += inp @ w^T. The sublayers' output projections add into the f32 residual stream this
/// way (no rounding of the branch to T, no separate pass); the logits come out in f32.
#[allow(clippy::too_many_arguments)]
pub fn linear_fwd_into_f32<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<f32>,
    out_stride: usize,
    inp: &impl DevicePtr<T>,
    inp_stride: usize,
    w: &impl DevicePtr<T>,
    dims: LinearDims,
    accumulate: bool,
) -> Result<()> {
    check_strided(
        "linear_fwd_into_f32",
        out.len(),
        out_stride,
        inp.len(),
        inp_stride,
        w.len(),
        dims,
    )?;
    if use_gemv::<T>(dims) {
        let out = GemvOut::F32 {
            out,
            stride: out_stride,
            accumulate,
        };
        let input = GemvInput::Rows {
            inp,
            stride: inp_stride,
        };
        return gemv_fwd(dev, out, input, w, dims);
    }
    let s = dev.stream();
    let (o_p, _g0) = out.device_ptr_mut(s);
    let (i_p, _g1) = inp.device_ptr(s);
    let (w_p, _g2) = w.device_ptr(s);
    dense::<T>(
        dev,
        o_p,
        out_stride,
        i_p,
        inp_stride,
        w_p,
        dims,
        Dest::F32 { accumulate },
    )
}

fn check_strided(
    op: &'static str,
    out_len: usize,
    out_stride: usize,
    inp_len: usize,
    inp_stride: usize,
    w_len: usize,
    dims: LinearDims,
) -> Result<()> {
    let LinearDims {
        rows,
        in_features,
        out_features,
    } = dims;
    check_len(
        op,
        "w",
        w_len,
        out_features * in_features,
        "[out_features, in_features]",
    )?;
    check_rows(op, "inp", inp_len, rows, inp_stride, in_features)?;
    check_rows(op, "out", out_len, rows, out_stride, out_features)?;
    if in_features == 0 && rows > 0 && out_features > 0 {
        return Err(CudaError::Unsupported {
            op,
            reason: "in_features = 0".into(),
        });
    }
    Ok(())
}

/// Whether a dense layer runs on the GEMV kernel (`gemv_fwd`, kernels/gemv.cu) rather than
/// cuBLAS: up to 4 rows (a decoding step), in f32 storage unless `SAMBA_GEMV=0` (cuBLAS's f32
/// path ran at 26% of the bandwidth with few rows), in bf16 only with `SAMBA_GEMV=1`: on the
/// H200 cuBLAS streamed one row's cold bf16 weights at 64-90% of the bandwidth and the GEMV
/// kernel at 52-68%, and a decoding step took 1.36 ms on cuBLAS against 1.64 ms on the kernel.
fn use_gemv<T: Elem>(dims: LinearDims) -> bool {
    let switch = std::env::var("SAMBA_GEMV");
    let on = if T::SUFFIX == "f32" {
        switch.map_or(true, |v| v != "0")
    } else {
        switch.is_ok_and(|v| v == "1")
    };
    on && dims.rows > 0 && dims.in_features > 0 && gemv_applies::<T>(dims.rows, dims.in_features)
}

/// The dense layer on raw pointers whose spans were checked by the caller.
#[allow(clippy::too_many_arguments)]
fn dense<T: Elem>(
    dev: &CudaDevice,
    o_p: u64,
    out_stride: usize,
    i_p: u64,
    inp_stride: usize,
    w_p: u64,
    dims: LinearDims,
    dest: Dest,
) -> Result<()> {
    const OP: &str = "linear_fwd";
    let LinearDims {
        rows,
        in_features,
        out_features,
    } = dims;
    if rows == 0 || out_features == 0 {
        return Ok(());
    }
    let m = to_i32(OP, "out_features", out_features)?;
    let n = to_i32(OP, "rows", rows)?;
    let k = to_i32(OP, "in_features", in_features)?;
    let ldb = to_i32(OP, "inp_stride", inp_stride)?;
    let ldc = to_i32(OP, "out_stride", out_stride)?;
    let in_type = if T::SUFFIX == "f32" {
        cudaDataType_t::CUDA_R_32F
    } else {
        cudaDataType_t::CUDA_R_16BF
    };
    let (out_type, beta) = match dest {
        Dest::Elem => (in_type, 0.0f32),
        Dest::F32 { accumulate } => (
            cudaDataType_t::CUDA_R_32F,
            if accumulate { 1.0f32 } else { 0.0 },
        ),
    };
    let alpha = 1.0f32;
    let blas = dev.blas()?;
    // SAFETY: column-major C [m = out, n = rows] (ldc = out_stride) = A^T (A = w, [k, m] with
    // lda = in) times B (inp, [k, n] with ldb = inp_stride), plus beta C: cuBLAS reads m * k of
    // w and the span of n columns of B, reads and writes the span of out, all checked by the
    // caller; alpha and beta are f32 host scalars as CUBLAS_COMPUTE_32F takes them; out is
    // borrowed mutably by the caller, so it aliases neither operand; the call is queued on the
    // device's stream (the handle's).
    unsafe {
        gemm_ex(
            *blas.handle(),
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
            m,
            n,
            k,
            (&alpha) as *const f32 as *const _,
            w_p as *const _,
            in_type,
            k,
            i_p as *const _,
            in_type,
            ldb,
            (&beta) as *const f32 as *const _,
            o_p as *mut _,
            out_type,
            ldc,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|source| CudaError::Cublas {
        what: "running a dense layer's GEMM",
        source,
    })
}
