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
use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use samba_cpu::ops::matmul::LinearDims;

use crate::compile::GEMV;
use crate::error::{check_len, driver, to_i32, Result};
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

/// Rows at most this many go through the GEMV kernel (GEMV_MAX_ROWS in kernels/gemv.cu).
const GEMV_MAX_ROWS: usize = 4;
/// Warps per block of the GEMV kernel.
const GEMV_WARPS: usize = 8;

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
/// default math mode: no TF32); in f32 storage up to 4 rows (decoding) run the GEMV kernel.
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
    let span = |stride: usize, width: usize| {
        if rows == 0 {
            0
        } else {
            (rows - 1) * stride + width
        }
    };
    for (what, len, stride, width) in [
        ("inp", inp_len, inp_stride, in_features),
        ("out", out_len, out_stride, out_features),
    ] {
        if stride < width || len < span(stride, width) {
            return Err(CudaError::Unsupported {
                op,
                reason: format!(
                    "{what}: {rows} rows of {width} values {stride} apart need {} elements, the buffer holds {len}",
                    span(stride, width)
                ),
            });
        }
    }
    if in_features == 0 && rows > 0 && out_features > 0 {
        return Err(CudaError::Unsupported {
            op,
            reason: "in_features = 0".into(),
        });
    }
    Ok(())
}

/// Whether the GEMV kernel takes these rows: f32 storage (in bf16, cuBLAS reads the weights of a
/// one-row product faster: on the H200 a 64-row [9216, 2304] bf16 GEMM ran at 96% of the copy
/// bandwidth, this kernel at 65% with one row, and a whole decoding step was 1.5 ms through cuBLAS
/// against 1.7 ms through this kernel; in f32 the kernel ran at 75%, cuBLAS's SIMT GEMM at 26%),
/// few rows, 16-byte aligned weight rows and input rows (8 values per lane step), and not
/// switched off (`SAMBA_GEMV=0`).
fn gemv_applies<T: Elem>(i_p: u64, inp_stride: usize, w_p: u64, dims: LinearDims) -> bool {
    let vec = 16 / std::mem::size_of::<T>();
    T::SUFFIX == "f32"
        && dims.rows <= GEMV_MAX_ROWS
        && dims.in_features % 8 == 0
        && inp_stride % vec == 0
        && i_p % 16 == 0
        && w_p % 16 == 0
        && std::env::var("SAMBA_GEMV").map_or(true, |v| v != "0")
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
    if gemv_applies::<T>(i_p, inp_stride, w_p, dims) {
        let s = dev.stream();
        let blocks = out_features.div_ceil(GEMV_WARPS).min(132 * 16) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (32 * GEMV_WARPS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (name, acc) = match dest {
            Dest::Elem => (format!("gemv_fwd_{}", T::SUFFIX), None),
            Dest::F32 { accumulate } => (
                format!("gemv_f32out_{}", T::SUFFIX),
                Some(accumulate as i32),
            ),
        };
        let f = dev.function(&GEMV, &name, 0)?;
        let mut launch = s.launch_builder(&f);
        launch
            .arg(&o_p)
            .arg(&ldc)
            .arg(&i_p)
            .arg(&ldb)
            .arg(&w_p)
            .arg(&n)
            .arg(&k)
            .arg(&m);
        if let Some(a) = &acc {
            launch.arg(a);
        }
        // SAFETY: arguments match gemv_fwd_<T>(T*, int, const T*, int, const T*, int, int, int)
        // or gemv_f32out_<T>(float*, int, const T*, int, const T*, int, int, int, int); the
        // spans of out, inp and w were checked by the caller; rows <= 4, in_features % 8 == 0
        // and 16-byte aligned rows (gemv_applies) as the kernel's vector loads need.
        unsafe { launch.launch(cfg) }.map_err(driver("launching gemv"))?;
        return Ok(());
    }
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
