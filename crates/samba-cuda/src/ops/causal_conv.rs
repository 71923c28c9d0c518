//! Depthwise causal conv + SiLU forward on the GPU; the kernels are `causal_conv1d_silu_fwd`
//! and `causal_conv1d_state_fwd` in kernels/causal_conv.cu.

use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use samba_cpu::ops::causal_conv::ConvDims;

use super::{entry, grid_1d, grid_dim, StateIn, StateOut};
use crate::compile::CAUSAL_CONV;
use crate::error::{check_len, driver, to_i32, Result};
use crate::{CudaDevice, CudaError, Elem};

/// u = silu(bias + depthwise causal conv of x), as the CPU's `causal_conv1d_silu_fwd`.
/// x, u [batch, seq, channels]; w [channels, 1, kernel]; bias [channels];
/// state_in, state_out [batch, kernel - 1, channels]: the input rows before t = 0 (zeros
/// without it) and the last kernel - 1 input rows after the sequence (for the next chunk).
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d_silu_fwd<T: Elem>(
    dev: &CudaDevice,
    u: &mut impl DevicePtrMut<T>,
    x: &impl DevicePtr<T>,
    w: &impl DevicePtr<T>,
    bias: &impl DevicePtr<T>,
    dims: ConvDims,
    state_in: Option<&dyn StateIn<T>>,
    state_out: Option<&mut dyn StateOut<T>>,
) -> Result<()> {
    causal_conv1d_silu_fwd_strided(dev, u, x, dims.channels, w, bias, dims, state_in, state_out)
}

/// [`causal_conv1d_silu_fwd`] reading x [batch, seq, x_stride], its first `channels` columns
/// (Mamba's x_in is the first half of in_proj's output [x_in | z], x_stride = 2E).
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d_silu_fwd_strided<T: Elem>(
    dev: &CudaDevice,
    u: &mut impl DevicePtrMut<T>,
    x: &impl DevicePtr<T>,
    x_stride: usize,
    w: &impl DevicePtr<T>,
    bias: &impl DevicePtr<T>,
    dims: ConvDims,
    state_in: Option<&dyn StateIn<T>>,
    state_out: Option<&mut dyn StateOut<T>>,
) -> Result<()> {
    const OP: &str = "causal_conv1d_silu_fwd";
    check_conv(OP, dims, x_stride, x.len(), u.len(), w.len(), bias.len())?;
    let n = dims.batch * dims.seq * dims.channels;
    if let Some(st) = &state_in {
        check_len(
            OP,
            "state_in",
            st.elems(),
            dims.state_len(),
            "[batch, kernel - 1, channels]",
        )?;
    }
    if let Some(st) = &state_out {
        check_len(
            OP,
            "state_out",
            st.elems(),
            dims.state_len(),
            "[batch, kernel - 1, channels]",
        )?;
    }
    let batch = to_i32(OP, "batch", dims.batch)?;
    let seq = to_i32(OP, "seq", dims.seq)?;
    let channels = to_i32(OP, "channels", dims.channels)?;
    let kernel = to_i32(OP, "kernel", dims.kernel)?;
    let x_stride_i = to_i32(OP, "x_stride", x_stride)?;
    let s = dev.stream();
    let (x_p, _gx) = x.device_ptr(s);
    let (st_p, _gs) = match state_in {
        Some(st) => {
            let (p, g) = st.ptr(s);
            (p, Some(g))
        }
        None => (0u64, None),
    };
    if n > 0 {
        // Samba's width 4 has its own compiled entry point (taps unrolled).
        let name = if dims.kernel == 4 {
            entry::<T>("causal_conv1d_silu_fwd_k4")
        } else {
            entry::<T>(OP)
        };
        let f = dev.function(&CAUSAL_CONV, &name, 0)?;
        let (u_p, _g0) = u.device_ptr_mut(s);
        let (w_p, _g1) = w.device_ptr(s);
        let (b_p, _g2) = bias.device_ptr(s);
        let mut launch = s.launch_builder(&f);
        launch
            .arg(&u_p)
            .arg(&x_p)
            .arg(&w_p)
            .arg(&b_p)
            .arg(&st_p)
            .arg(&batch)
            .arg(&seq)
            .arg(&channels)
            .arg(&kernel)
            .arg(&x_stride_i);
        let cfg = LaunchConfig {
            grid_dim: (
                grid_dim(
                    OP,
                    "channel blocks",
                    dims.channels.div_ceil(CONV_THREADS),
                    u32::MAX,
                )?,
                grid_dim(OP, "seq / CONV_TILE", dims.seq.div_ceil(CONV_TILE), 65535)?,
                grid_dim(OP, "batch", dims.batch, 65535)?,
            ),
            block_dim: (CONV_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match causal_conv1d_silu_fwd[_k4]_<T>(T*, const T*, const T*,
        // const T*, const T*, int, int, int, int, int) (the k4 entry only for kernel = 4); every length was checked above against dims and
        // x_stride, kernel <= CONV_MAX_K; a null state_in is read as zeros by the kernel; the
        // grid covers every (channel, tile of CONV_TILE steps, sequence) once.
        unsafe { launch.launch(cfg) }.map_err(driver("launching causal_conv1d_silu_fwd"))?;
    }
    if let Some(out) = state_out {
        let m = dims.state_len();
        if m > 0 {
            let f = dev.function(&CAUSAL_CONV, &entry::<T>("causal_conv1d_state_fwd"), 0)?;
            let (o_p, _go) = out.ptr_mut(s);
            let mut launch = s.launch_builder(&f);
            launch
                .arg(&o_p)
                .arg(&x_p)
                .arg(&st_p)
                .arg(&batch)
                .arg(&seq)
                .arg(&channels)
                .arg(&kernel)
                .arg(&x_stride_i);
            // SAFETY: arguments match causal_conv1d_state_fwd_<T>(T*, const T*, const T*, int,
            // int, int, int, int); state_out holds batch * (kernel - 1) * channels elements (checked)
            // and is borrowed mutably, so it aliases neither x nor state_in.
            unsafe { launch.launch(grid_1d(m)) }
                .map_err(driver("launching causal_conv1d_state_fwd"))?;
        }
    }
    Ok(())
}

/// The shapes both conv kernels need: a width 1..=MAX_KERNEL, x [batch, seq, x_stride] with
/// x_stride >= channels >= 1, u [batch, seq, channels], w [channels, 1, kernel], bias [channels].
fn check_conv(
    op: &'static str,
    dims: ConvDims,
    x_stride: usize,
    x_len: usize,
    u_len: usize,
    w_len: usize,
    bias_len: usize,
) -> Result<()> {
    if dims.kernel == 0
        || dims.kernel > MAX_KERNEL
        || dims.channels == 0
        || x_stride < dims.channels
    {
        return Err(CudaError::Unsupported {
            op,
            reason: format!(
                "kernel = {} (1..={MAX_KERNEL}), channels = {} (>= 1), x_stride = {x_stride} (>= channels)",
                dims.kernel, dims.channels
            ),
        });
    }
    let rows = dims.batch * dims.seq;
    check_len(op, "x", x_len, rows * x_stride, "[batch, seq, x_stride]")?;
    check_len(
        op,
        "u",
        u_len,
        rows * dims.channels,
        "[batch, seq, channels]",
    )?;
    check_len(
        op,
        "w",
        w_len,
        dims.channels * dims.kernel,
        "[channels, 1, kernel]",
    )?;
    check_len(op, "bias", bias_len, dims.channels, "[channels]")
}

/// Kernel widths the kernels handle (CONV_MAX_K in kernels/causal_conv.cu).
const MAX_KERNEL: usize = 8;
/// Steps one thread of the parallel conv walks (CONV_TILE).
const CONV_TILE: usize = 64;
/// Threads per block of the parallel conv (one channel each).
const CONV_THREADS: usize = 128;

/// The conv over a short chunk (a decoding step) with the conv state updated in place:
/// u [batch, seq, channels] from x [batch, seq, x_stride] (first `channels` columns), `state`
/// [batch, kernel - 1, channels] read as the inputs before the chunk and replaced by the last
/// kernel - 1 inputs after it (as `causal_conv1d_silu_fwd` with state_in = state_out = state).
/// One thread per (batch, channel) walks the chunk: meant for a few steps, not long chunks.
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d_update_fwd<T: Elem>(
    dev: &CudaDevice,
    u: &mut impl DevicePtrMut<T>,
    state: &mut impl DevicePtrMut<T>,
    x: &impl DevicePtr<T>,
    x_stride: usize,
    w: &impl DevicePtr<T>,
    bias: &impl DevicePtr<T>,
    dims: ConvDims,
) -> Result<()> {
    const OP: &str = "causal_conv1d_update_fwd";
    check_conv(OP, dims, x_stride, x.len(), u.len(), w.len(), bias.len())?;
    check_len(
        OP,
        "state",
        state.len(),
        dims.state_len(),
        "[batch, kernel - 1, channels]",
    )?;
    let lanes = dims.batch * dims.channels;
    if lanes == 0 || dims.seq == 0 {
        return Ok(());
    }
    let batch = to_i32(OP, "batch", dims.batch)?;
    let seq = to_i32(OP, "seq", dims.seq)?;
    let channels = to_i32(OP, "channels", dims.channels)?;
    let kernel = dims.kernel as i32;
    let x_stride_i = to_i32(OP, "x_stride", x_stride)?;
    let f = dev.function(&CAUSAL_CONV, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (u_p, _g0) = u.device_ptr_mut(s);
    let (st_p, _g1) = state.device_ptr_mut(s);
    let (x_p, _g2) = x.device_ptr(s);
    let (w_p, _g3) = w.device_ptr(s);
    let (b_p, _g4) = bias.device_ptr(s);
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&u_p)
        .arg(&st_p)
        .arg(&x_p)
        .arg(&w_p)
        .arg(&b_p)
        .arg(&batch)
        .arg(&seq)
        .arg(&channels)
        .arg(&kernel)
        .arg(&x_stride_i);
    let cfg = LaunchConfig {
        grid_dim: (lanes.div_ceil(128) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match causal_conv1d_update_fwd_<T>(T*, T*, const T*, const T*, const T*,
    // int, int, int, int, int); every length was checked above; one thread per (batch, channel)
    // (the kernel returns past batch * channels) reads its state before writing it.
    unsafe { launch.launch(cfg) }.map_err(driver("launching causal_conv1d_update_fwd"))?;
    Ok(())
}
