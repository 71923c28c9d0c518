//! The dense layers of a decoding step on the GEMV kernels (kernels/gemv.cu): a few rows
//! (rows <= [`GEMV_MAX_ROWS`]) against a weight matrix streamed from memory once, with the
//! elementwise work around the product fused in. `xin` is the input, rows of T or
//! RMSNorm(x) of the f32 residual stream ([`GemvInput`]):
//!
//! | wrapper | computes | instead of |
//! |---|---|---|
//! | [`gemv_fwd`] | out = xin @ w^T (T or f32), or out += xin @ w^T (f32) | (RMSNorm +) GEMM (+ split-K reduce) |
//! | [`gemv_swiglu_fwd`] | act = silu(xin @ w1^T) * (xin @ w2^T) | RMSNorm + GEMM + `swiglu_fused_fwd` |
//! | [`gemv_rope_fwd`] | qkv = rope(xin @ attn^T) at each sequence's position | RMSNorm + GEMM + `rope_pos_fwd` |
//! | [`gemv_conv_fwd`] | [u, z] = conv step(xin @ in_proj^T), conv state shifted | RMSNorm + GEMM + `causal_conv1d_update_fwd` |
//!
//! Intermediate values are rounded to T where the unfused path stores them (the normed input,
//! gate and up, q and k before rotation, x_in), so both paths compute the same numbers up to the
//! order of the sums. Kernels are launched through [`super::pdl`] (programmatic dependent launch
//! with `SAMBA_PDL=1`).

use cudarc::driver::{sys, CudaFunction, DevicePtr, DevicePtrMut, LaunchConfig};
use samba_cpu::ops::attention::QkvDims;
use samba_cpu::ops::causal_conv::ConvDims;
use samba_cpu::ops::matmul::LinearDims;

use super::pdl::{self, Args};
use super::rope::{check_qkv_dims, check_table, DeviceRopeTable};
use super::{entry, StateIn, StateOut};
use crate::compile::GEMV;
use crate::error::{check_len, check_rows, to_i32, Result};
use crate::{CudaDevice, CudaError, Elem};

/// Input rows at most (GEMV_MAX_ROWS in the kernel).
pub const GEMV_MAX_ROWS: usize = 4;
/// Warps per block (GEMV_WARPS).
const GEMV_WARPS: usize = 4;
/// Conv taps the conv epilogue holds (GEMV_CONV_MAX_K).
pub const GEMV_CONV_MAX_K: usize = 4;
/// Dynamic shared memory a block may use for its staged input rows (below the 227 KiB an H100 /
/// H200 block may opt in to, and the A100's 163 KiB, with room for the static arrays).
const MAX_SMEM: usize = 160 * 1024;
/// Shared memory a block may use without opting in.
const DEFAULT_SMEM: usize = 48 * 1024;

/// The input of a GEMV: `rows` rows of `in_features` values.
pub enum GemvInput<'a, T> {
    /// Rows of T, `stride` elements apart.
    Rows {
        inp: &'a dyn StateIn<T>,
        stride: usize,
    },
    /// RMSNorm of the f32 rows x [rows, in_features] with weight `w` [in_features]:
    /// x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) (rounded to T, as a stored normed input).
    RmsNorm {
        x: &'a dyn StateIn<f32>,
        w: &'a dyn StateIn<T>,
        eps: f32,
    },
}

/// Where [`gemv_fwd`] writes out [rows, n_out], rows `stride` apart.
pub enum GemvOut<'a, T> {
    Elem {
        out: &'a mut dyn StateOut<T>,
        stride: usize,
    },
    /// f32, and with `accumulate` added to what is there (the residual stream).
    F32 {
        out: &'a mut dyn StateOut<f32>,
        stride: usize,
        accumulate: bool,
    },
}

/// Whether the GEMV kernels take `rows` rows of `in_features` values of T (at most
/// [`GEMV_MAX_ROWS`] rows, staged in one block's shared memory).
pub fn gemv_applies<T: Elem>(rows: usize, in_features: usize) -> bool {
    (1..=GEMV_MAX_ROWS).contains(&rows) && smem_bytes::<T>(rows, in_features) <= MAX_SMEM
}

fn smem_bytes<T>(rows: usize, in_features: usize) -> usize {
    rows * in_features.div_ceil(8) * 8 * std::mem::size_of::<T>()
}

/// Checks rows and input, and returns the input's launch arguments (inp, inp_stride, x,
/// norm_w, eps) with their pointers.
fn input_args<T: Elem>(
    op: &'static str,
    dev: &CudaDevice,
    input: &GemvInput<'_, T>,
    rows: usize,
    in_features: usize,
    args: Args,
) -> Result<Args> {
    if !gemv_applies::<T>(rows, in_features) || in_features == 0 {
        return Err(CudaError::Unsupported {
            op,
            reason: format!(
                "{rows} rows of {in_features} values: the GEMV kernels take 1..={GEMV_MAX_ROWS} rows of 1.. values that fit {MAX_SMEM} bytes of shared memory"
            ),
        });
    }
    let s = dev.stream();
    Ok(match input {
        GemvInput::Rows { inp, stride } => {
            check_rows(op, "inp", inp.elems(), rows, *stride, in_features)?;
            let (p, _g) = inp.ptr(s);
            args.ptr(p)
                .i32(to_i32(op, "inp_stride", *stride)?)
                .ptr(0)
                .ptr(0)
                .f32(0.0)
        }
        GemvInput::RmsNorm { x, w, eps } => {
            check_len(
                op,
                "x",
                x.elems(),
                rows * in_features,
                "[rows, in_features]",
            )?;
            check_len(op, "norm weight", w.elems(), in_features, "[in_features]")?;
            let (x_p, _g0) = x.ptr(s);
            let (w_p, _g1) = w.ptr(s);
            args.ptr(0).i32(0).ptr(x_p).ptr(w_p).f32(*eps)
        }
    })
}

/// The number of SMs of the device.
fn sm_count(dev: &CudaDevice) -> usize {
    dev.stream()
        .context()
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_or(132, |n| n.max(1) as usize)
}

/// A kernel of the file, its slices per unit (k_split) and its grid, for `n_units` units of
/// weight rows of `in_features` values over `rows` input rows.
fn plan<T: Elem>(
    dev: &CudaDevice,
    name: &str,
    n_units: usize,
    rows: usize,
    in_features: usize,
) -> Result<(CudaFunction, i32, LaunchConfig)> {
    let smem = smem_bytes::<T>(rows, in_features);
    let f = dev.function(
        &GEMV,
        &entry::<T>(name),
        // (the static arrays count towards the 48 KiB too)
        if smem + 2048 > DEFAULT_SMEM {
            MAX_SMEM
        } else {
            0
        },
    )?;
    // Recorded for the persistent step: its grid, whose blocks are all resident.
    let max_blocks = match pdl::recording_blocks(dev) {
        Some(blocks) => blocks,
        None => {
            let resident = f
                .occupancy_max_active_blocks_per_multiprocessor(
                    (32 * GEMV_WARPS) as u32,
                    smem,
                    None,
                )
                .map_or(1, |b| b.max(1) as usize);
            sm_count(dev) * resident
        }
    };
    // Slices of a unit's rows (more warps streaming, e.g. x_proj's 176 rows of 4608, the output
    // projections' 2304 rows) while a slice keeps at least 4 vectors per lane and the slices stay
    // within 4 per resident warp.
    let per_lane = (in_features / (16 / std::mem::size_of::<T>())).div_ceil(32);
    let mut k_split = 1;
    while k_split < GEMV_WARPS
        && per_lane >= 8 * k_split
        && n_units * 2 * k_split <= 4 * max_blocks * GEMV_WARPS
    {
        k_split *= 2;
    }
    // Every warp the same number of units, on a grid that is resident at once.
    let per_block = GEMV_WARPS / k_split;
    let rounds = n_units.div_ceil(per_block * max_blocks).max(1);
    let blocks = n_units.div_ceil(per_block * rounds).max(1);
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: ((32 * GEMV_WARPS) as u32, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    Ok((f, k_split as i32, cfg))
}

/// out [rows, out_features] = xin @ w^T (T or f32) or out += xin @ w^T (f32), w [out_features,
/// in_features] (T). The decoding step's plain dense layers (x_proj, the output projections
/// into the residual stream) and, with an RMSNorm input, the output head.
pub fn gemv_fwd<T: Elem>(
    dev: &CudaDevice,
    out: GemvOut<'_, T>,
    input: GemvInput<'_, T>,
    w: &impl DevicePtr<T>,
    dims: LinearDims,
) -> Result<()> {
    const OP: &str = "gemv_fwd";
    let LinearDims {
        rows,
        in_features,
        out_features,
    } = dims;
    check_len(
        OP,
        "w",
        w.len(),
        out_features * in_features,
        "[out_features, in_features]",
    )?;
    input_args(OP, dev, &input, rows, in_features, Args::new())?;
    if out_features == 0 {
        return Ok(());
    }
    let s = dev.stream();
    let (o_p, _g, stride, mode) = match out {
        GemvOut::Elem { out, stride } => {
            check_rows(OP, "out", out.elems(), rows, stride, out_features)?;
            let (p, g) = out.ptr_mut(s);
            (p, g, stride, 0)
        }
        GemvOut::F32 {
            out,
            stride,
            accumulate,
        } => {
            check_rows(OP, "out", out.elems(), rows, stride, out_features)?;
            let (p, g) = out.ptr_mut(s);
            (p, g, stride, if accumulate { 2 } else { 1 })
        }
    };
    let (w_p, _gw) = w.device_ptr(s);
    let (f, k_split, cfg) = plan::<T>(dev, "gemv_fwd", out_features, rows, in_features)?;
    let args = Args::new()
        .ptr(o_p)
        .i32(to_i32(OP, "out stride", stride)?)
        .i32(mode);
    let args = input_args(OP, dev, &input, rows, in_features, args)?
        .ptr(w_p)
        .i32(rows as i32)
        .i32(to_i32(OP, "in_features", in_features)?)
        .i32(to_i32(OP, "out_features", out_features)?)
        .i32(k_split);
    // SAFETY: arguments match gemv_fwd_<T>(void*, int, int, const T*, int, const float*, const
    // T*, float, const T*, int, int, int, int); out holds its rows at `stride` (checked above),
    // of T for mode 0 and f32 otherwise; the input's rows and w's [out, in] were checked; rows
    // <= 4 and the staged rows fit the dynamic shared memory (input_args, plan).
    unsafe { pdl::launch(dev, &f, cfg, &args, "gemv_fwd") }
}

/// act [rows, hidden] = silu(xin @ w1^T) * (xin @ w2^T), w12 = [w1; w2] [2 hidden, in_features]
/// (T): the MLP's gate and up projections and its SwiGLU, one kernel.
pub fn gemv_swiglu_fwd<T: Elem>(
    dev: &CudaDevice,
    act: &mut impl DevicePtrMut<T>,
    input: GemvInput<'_, T>,
    w12: &impl DevicePtr<T>,
    dims: LinearDims,
) -> Result<()> {
    const OP: &str = "gemv_swiglu_fwd";
    let LinearDims {
        rows,
        in_features,
        out_features: hidden,
    } = dims;
    check_len(
        OP,
        "w12",
        w12.len(),
        2 * hidden * in_features,
        "[2 hidden, in_features]",
    )?;
    input_args(OP, dev, &input, rows, in_features, Args::new())?;
    check_len(OP, "act", act.len(), rows * hidden, "[rows, hidden]")?;
    if hidden == 0 {
        return Ok(());
    }
    let s = dev.stream();
    let (a_p, _g0) = act.device_ptr_mut(s);
    let (w_p, _g1) = w12.device_ptr(s);
    let (f, k_split, cfg) = plan::<T>(dev, "gemv_swiglu_fwd", hidden, rows, in_features)?;
    let hidden_i = to_i32(OP, "hidden", hidden)?;
    let args = Args::new().ptr(a_p).i32(hidden_i);
    let args = input_args(OP, dev, &input, rows, in_features, args)?
        .ptr(w_p)
        .i32(rows as i32)
        .i32(to_i32(OP, "in_features", in_features)?)
        .i32(hidden_i)
        .i32(k_split);
    // SAFETY: arguments match gemv_swiglu_fwd_<T>(T*, int, const T*, int, const float*, const
    // T*, float, const T*, int, int, int, int); act holds rows * hidden, w12 2 hidden rows of
    // in_features (checked); rows <= 4 and the staged rows fit shared memory.
    unsafe { pdl::launch(dev, &f, cfg, &args, "gemv_swiglu_fwd") }
}

/// qkv [batch, 1, qkv_dim] = xin @ w^T with every q and k head rotated (RoPE, GPT-NeoX halves)
/// at sequence b's position `pos[b]` (row p of `table`, which starts at 0 and covers
/// `max_position`, the largest position used); v heads as computed. w [qkv_dim, in_features]
/// (T), rows = dims.batch (one token each).
#[allow(clippy::too_many_arguments)]
pub fn gemv_rope_fwd<T: Elem>(
    dev: &CudaDevice,
    qkv: &mut impl DevicePtrMut<T>,
    input: GemvInput<'_, T>,
    w: &impl DevicePtr<T>,
    in_features: usize,
    dims: QkvDims,
    table: &DeviceRopeTable,
    pos: &dyn StateIn<i32>,
    max_position: usize,
) -> Result<()> {
    const OP: &str = "gemv_rope_fwd";
    check_qkv_dims(OP, dims)?;
    let (rows, n_out) = (dims.batch, dims.qkv_dim());
    if dims.seq != 1 {
        return Err(CudaError::Unsupported {
            op: OP,
            reason: format!("one token per sequence, not {}", dims.seq),
        });
    }
    check_table(OP, table, dims.head_dim, max_position)?;
    check_len(
        OP,
        "w",
        w.len(),
        n_out * in_features,
        "[qkv_dim, in_features]",
    )?;
    input_args(OP, dev, &input, rows, in_features, Args::new())?;
    check_len(OP, "qkv", qkv.len(), rows * n_out, "[batch, 1, qkv_dim]")?;
    check_len(OP, "pos", pos.elems(), rows, "[batch]")?;
    let s = dev.stream();
    let (q_p, _g0) = qkv.device_ptr_mut(s);
    let (w_p, _g1) = w.device_ptr(s);
    let (p_p, _g2) = pos.ptr(s);
    let (cos_p, _g3) = table.cos().device_ptr(s);
    let (sin_p, _g4) = table.sin().device_ptr(s);
    let (f, k_split, cfg) = plan::<T>(dev, "gemv_rope_fwd", n_out / 2, rows, in_features)?;
    let n_out_i = to_i32(OP, "qkv_dim", n_out)?;
    let args = Args::new()
        .ptr(q_p)
        .i32(n_out_i)
        .ptr(cos_p)
        .ptr(sin_p)
        .ptr(p_p)
        .i32(to_i32(OP, "head_dim", dims.head_dim)?)
        .i32(to_i32(OP, "heads / kv_heads", dims.heads / dims.kv_heads)?);
    let args = input_args(OP, dev, &input, rows, in_features, args)?
        .ptr(w_p)
        .i32(rows as i32)
        .i32(to_i32(OP, "in_features", in_features)?)
        .i32(n_out_i)
        .i32(k_split);
    // SAFETY: arguments match gemv_rope_fwd_<T>(T*, int, const float*, const float*, const int*,
    // int, int, const T*, int, const float*, const T*, float, const T*, int, int, int, int);
    // qkv holds rows * qkv_dim, w qkv_dim rows of in_features, pos rows (checked); every
    // position is at most max_position < table.len (the caller's promise, from the host copy of
    // the positions), and the table has head_dim / 2 columns.
    unsafe { pdl::launch(dev, &f, cfg, &args, "gemv_rope_fwd") }
}

/// Mamba's in_proj and one conv step, for one token per sequence: [x_in | z] = xin @ w^T
/// (w = in_proj [2E, in_features]); z goes to columns E.. of xz [rows, 2E]; x_in goes through
/// u = silu(conv(x_in) + bias) into u [rows, E], with the conv state [rows, d_conv - 1, E]
/// shifted in place (the CPU's `causal_conv1d_silu_fwd` of one step with its state). Columns
/// ..E of xz are not written.
#[allow(clippy::too_many_arguments)]
pub fn gemv_conv_fwd<T: Elem>(
    dev: &CudaDevice,
    u: &mut impl DevicePtrMut<T>,
    xz: &mut impl DevicePtrMut<T>,
    conv_state: &mut impl DevicePtrMut<T>,
    input: GemvInput<'_, T>,
    w: &impl DevicePtr<T>,
    in_features: usize,
    conv_w: &impl DevicePtr<T>,
    conv_b: &impl DevicePtr<T>,
    conv: ConvDims,
) -> Result<()> {
    const OP: &str = "gemv_conv_fwd";
    let (rows, e, k) = (conv.batch, conv.channels, conv.kernel);
    if conv.seq != 1 || k == 0 || k > GEMV_CONV_MAX_K {
        return Err(CudaError::Unsupported {
            op: OP,
            reason: format!(
                "one token per sequence (seq {}) and 1..={GEMV_CONV_MAX_K} conv taps ({k})",
                conv.seq
            ),
        });
    }
    check_len(
        OP,
        "w",
        w.len(),
        2 * e * in_features,
        "[2 d_inner, in_features]",
    )?;
    input_args(OP, dev, &input, rows, in_features, Args::new())?;
    check_len(OP, "u", u.len(), rows * e, "[batch, d_inner]")?;
    check_len(OP, "xz", xz.len(), rows * 2 * e, "[batch, 2 d_inner]")?;
    check_len(
        OP,
        "conv_state",
        conv_state.len(),
        conv.state_len(),
        "[batch, d_conv - 1, d_inner]",
    )?;
    check_len(OP, "conv_w", conv_w.len(), e * k, "[d_inner, d_conv]")?;
    check_len(OP, "conv_b", conv_b.len(), e, "[d_inner]")?;
    let s = dev.stream();
    let (u_p, _g0) = u.device_ptr_mut(s);
    let (xz_p, _g1) = xz.device_ptr_mut(s);
    let (st_p, _g2) = conv_state.device_ptr_mut(s);
    let (cw_p, _g3) = conv_w.device_ptr(s);
    let (cb_p, _g4) = conv_b.device_ptr(s);
    let (w_p, _g5) = w.device_ptr(s);
    let (f, k_split, cfg) = plan::<T>(dev, "gemv_conv_fwd", 2 * e, rows, in_features)?;
    let args = Args::new()
        .ptr(u_p)
        .ptr(xz_p)
        .ptr(st_p)
        .ptr(cw_p)
        .ptr(cb_p)
        .i32(to_i32(OP, "d_inner", e)?)
        .i32(k as i32);
    let args = input_args(OP, dev, &input, rows, in_features, args)?
        .ptr(w_p)
        .i32(rows as i32)
        .i32(to_i32(OP, "in_features", in_features)?)
        .i32(k_split);
    // SAFETY: arguments match gemv_conv_fwd_<T>(T*, T*, T*, const T*, const T*, int, int, const
    // T*, int, const float*, const T*, float, const T*, int, int, int); u, xz, the conv state,
    // its weights and w hold what their shapes need (checked above); d_conv <= 4 as the
    // epilogue's registers need.
    unsafe { pdl::launch(dev, &f, cfg, &args, "gemv_conv_fwd") }
}
