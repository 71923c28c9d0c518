//! Mamba-1's selective scan forward on the GPU; the kernel is `selective_scan_fwd` in
//! kernels/selective_scan.cu.

use cudarc::driver::{CudaView, DevicePtrMut, LaunchConfig, PushKernelArg};
use samba_cpu::ops::selective_scan::ScanDims;

use super::{StateIn, StateOut};
use crate::compile::SELECTIVE_SCAN;
use crate::error::{check_len, driver, to_i32, Result};
use crate::{CudaDevice, CudaError, Elem};

/// The inputs of one scan on the device, shapes as in the CPU's `ScanInputs`.
pub struct ScanBuffers<'a, T> {
    /// [batch, seq, d_inner]: the conv output, the scan's input.
    pub u: CudaView<'a, T>,
    /// [batch, seq, d_inner]: dt_proj(dt_low), before the bias and softplus.
    pub delta_raw: CudaView<'a, T>,
    /// [d_inner]: dt_proj.bias.
    pub delta_bias: CudaView<'a, T>,
    /// [d_inner, d_state]: A = -exp(a_log).
    pub a_log: CudaView<'a, T>,
    /// [batch, seq, d_state]
    pub b: CudaView<'a, T>,
    /// [batch, seq, d_state]
    pub c: CudaView<'a, T>,
    /// [d_inner]: D.
    pub d_skip: CudaView<'a, T>,
    /// [batch, seq, d_inner]: the gate.
    pub z: CudaView<'a, T>,
}

/// Row strides of the scan's inputs that may be read in place from wider buffers: z is the
/// second half of Mamba's in_proj output [x_in | z] (z = 2E), B and C sit inside x_proj's
/// output [dt_low | B | C] (bc = dt_rank + 2 d_state).
#[derive(Debug, Clone, Copy)]
pub struct ScanStrides {
    pub z: usize,
    pub bc: usize,
}

impl ScanStrides {
    /// Contiguous inputs: z [.., d_inner], B and C [.., d_state].
    pub fn contiguous(dims: ScanDims) -> ScanStrides {
        ScanStrides {
            z: dims.d_inner,
            bc: dims.d_state,
        }
    }
}

/// Selective scan with D skip and SiLU(z) gate, as the CPU's `selective_scan_fwd`.
/// out [batch, seq, d_inner]; state_in, state_out [batch, d_inner, d_state] in f32 (h before
/// the first step, zero without it, and after the last). d_state must be a power of two <= 32
/// (Samba's is 16): each (batch, channel) lane is d_state threads of one warp.
pub fn selective_scan_fwd<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    inp: &ScanBuffers<'_, T>,
    dims: ScanDims,
    state_in: Option<&dyn StateIn<f32>>,
    state_out: Option<&mut dyn StateOut<f32>>,
) -> Result<()> {
    const OP: &str = "selective_scan_fwd";
    let strides = ScanStrides::contiguous(dims);
    check(OP, out.len(), inp, dims, strides)?;
    for (what, st) in [
        ("state_in", state_in.as_ref().map(|s| s.elems())),
        ("state_out", state_out.as_ref().map(|s| s.elems())),
    ] {
        if let Some(n) = st {
            check_len(OP, what, n, dims.state_len(), "[batch, d_inner, d_state]")?;
        }
    }
    let s = dev.stream();
    let (o_p, _g0) = out.device_ptr_mut(s);
    let (si_p, _g1) = match state_in {
        Some(st) => {
            let (p, g) = st.ptr(s);
            (p, Some(g))
        }
        None => (0u64, None),
    };
    let (so_p, _g2) = match state_out {
        Some(st) => {
            let (p, g) = st.ptr_mut(s);
            (p, Some(g))
        }
        None => (0u64, None),
    };
    launch::<T>(dev, o_p, so_p, si_p, inp, dims, strides)
}

/// The scan of one chunk of an inference run: inputs read with `strides`, and the SSM state
/// [batch, d_inner, d_state] (f32) read before the chunk and replaced by the state after it, in
/// place (each thread reads its h before the chunk and writes it after).
pub fn selective_scan_fwd_with_state<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    inp: &ScanBuffers<'_, T>,
    dims: ScanDims,
    strides: ScanStrides,
    state: Option<&mut dyn StateOut<f32>>,
) -> Result<()> {
    const OP: &str = "selective_scan_fwd";
    check(OP, out.len(), inp, dims, strides)?;
    if let Some(st) = &state {
        check_len(
            OP,
            "state",
            st.elems(),
            dims.state_len(),
            "[batch, d_inner, d_state]",
        )?;
    }
    let s = dev.stream();
    let (o_p, _g0) = out.device_ptr_mut(s);
    let (st_p, _g1) = match state {
        Some(st) => {
            let (p, g) = st.ptr_mut(s);
            (p, Some(g))
        }
        None => (0u64, None),
    };
    launch::<T>(dev, o_p, st_p, st_p, inp, dims, strides)
}

/// Rows of `width` values `stride` apart: the last row must end inside the buffer.
fn check_rows(
    op: &'static str,
    what: &'static str,
    len: usize,
    rows: usize,
    stride: usize,
    width: usize,
) -> Result<()> {
    let need = if rows == 0 {
        0
    } else {
        (rows - 1) * stride + width
    };
    if stride < width || len < need {
        return Err(CudaError::Unsupported {
            op,
            reason: format!(
                "{what}: {rows} rows of {width} values {stride} apart need {need} elements, the buffer holds {len}"
            ),
        });
    }
    Ok(())
}

fn check<T>(
    op: &'static str,
    out_len: usize,
    inp: &ScanBuffers<'_, T>,
    dims: ScanDims,
    strides: ScanStrides,
) -> Result<()> {
    let n_st = dims.d_state;
    if dims.d_inner == 0 || n_st == 0 || !n_st.is_power_of_two() || n_st > 32 {
        return Err(CudaError::Unsupported {
            op,
            reason: format!(
                "d_state = {n_st} (must be a power of two <= 32) and d_inner = {} (>= 1)",
                dims.d_inner
            ),
        });
    }
    let rows = dims.batch * dims.seq;
    let lanes = rows * dims.d_inner;
    let e = dims.d_inner;
    const LANES: &str = "[batch, seq, d_inner]";
    check_len(op, "out", out_len, lanes, LANES)?;
    check_len(op, "u", inp.u.len(), lanes, LANES)?;
    check_len(op, "delta_raw", inp.delta_raw.len(), lanes, LANES)?;
    check_rows(op, "z", inp.z.len(), rows, strides.z, e)?;
    check_len(op, "delta_bias", inp.delta_bias.len(), e, "[d_inner]")?;
    check_len(op, "d_skip", inp.d_skip.len(), e, "[d_inner]")?;
    check_len(op, "a_log", inp.a_log.len(), e * n_st, "[d_inner, d_state]")?;
    check_rows(op, "b", inp.b.len(), rows, strides.bc, n_st)?;
    check_rows(op, "c", inp.c.len(), rows, strides.bc, n_st)?;
    Ok(())
}

/// Threads per block of both kernels (SCAN_THREADS).
const SCAN_THREADS: usize = 128;
/// Above this many threads per channel the lanes kernel runs instead of the chunked one (which
/// then has too few channels per block to hide its chunk-by-chunk latency; measured on the H200:
/// at batch 4 x 4096 tokens of Samba-1.3B the chunked kernel with 16 threads per channel took
/// 8.8 ms, the lanes kernel 5.1 ms; at batch 128 x 1024 the chunked one is several times faster).
const CHUNKED_MAX_TPC: usize = 4;

/// Threads sharing one channel's d_state states: the fewest that still give about two waves of
/// threads on the GPU (132 multiprocessors x 2048 threads on the H200), a power of two <= d_state.
fn threads_per_channel(dims: ScanDims) -> usize {
    let target: usize = 2 * 132 * 2048;
    let channels = (dims.batch * dims.d_inner).max(1);
    target
        .div_ceil(channels)
        .next_power_of_two()
        .clamp(1, dims.d_state.min(32))
}

/// Launches the kernel for d_state (checked) on raw pointers: out, state_out, state_in (0 = none).
fn launch<T: Elem>(
    dev: &CudaDevice,
    o_p: u64,
    so_p: u64,
    si_p: u64,
    inp: &ScanBuffers<'_, T>,
    dims: ScanDims,
    strides: ScanStrides,
) -> Result<()> {
    const OP: &str = "selective_scan_fwd";
    let n_st = dims.d_state;
    if dims.batch == 0 || dims.d_inner == 0 || dims.seq == 0 {
        return Ok(());
    }
    let tpc = threads_per_channel(dims);
    let batch_u = u32::try_from(dims.batch)
        .ok()
        .filter(|&b| b <= 65535)
        .ok_or_else(|| CudaError::Unsupported {
            op: OP,
            reason: format!(
                "batch = {} is more than one grid dimension holds",
                dims.batch
            ),
        })?;
    let too_big = || CudaError::Unsupported {
        op: OP,
        reason: format!(
            "batch * d_inner = {} is more than one grid holds",
            dims.batch * dims.d_inner
        ),
    };
    // Many sequences: the chunked kernel; few long ones: the lanes kernel (see selective_scan.cu).
    let chunked = tpc <= CHUNKED_MAX_TPC;
    let (kernel, grid) = if chunked {
        let blocks =
            u32::try_from(dims.d_inner.div_ceil(SCAN_THREADS / tpc)).map_err(|_| too_big())?;
        ("selective_scan_fwd", (blocks, batch_u, 1))
    } else {
        let threads = dims.batch * dims.d_inner * n_st;
        let blocks = u32::try_from(threads.div_ceil(SCAN_THREADS)).map_err(|_| too_big())?;
        ("selective_scan_lanes_fwd", (blocks, 1, 1))
    };
    let batch = to_i32(OP, "batch", dims.batch)?;
    let seq = to_i32(OP, "seq", dims.seq)?;
    let d_inner = to_i32(OP, "d_inner", dims.d_inner)?;
    let z_stride = to_i32(OP, "z_stride", strides.z)?;
    let bc_stride = to_i32(OP, "bc_stride", strides.bc)?;
    let tpc_i = tpc as i32;
    let name = format!("{kernel}_{}_n{n_st}", T::SUFFIX);
    let f = dev.function(&SELECTIVE_SCAN, &name, 0)?;
    let s = dev.stream();
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&o_p)
        .arg(&so_p)
        .arg(&inp.u)
        .arg(&inp.delta_raw)
        .arg(&inp.delta_bias)
        .arg(&inp.a_log)
        .arg(&inp.b)
        .arg(&inp.c)
        .arg(&inp.d_skip)
        .arg(&inp.z)
        .arg(&si_p)
        .arg(&batch)
        .arg(&seq)
        .arg(&d_inner)
        .arg(&z_stride)
        .arg(&bc_stride);
    if chunked {
        launch.arg(&tpc_i);
    }
    let cfg = LaunchConfig {
        grid_dim: grid,
        block_dim: (SCAN_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match selective_scan_fwd_<T>_n<N>(T*, float*, 8 x const T*, const float*,
    // int x 6) or selective_scan_lanes_fwd_<T>_n<N>(the same without tpc); every length was
    // checked by the caller against dims and strides (`check`); null states are skipped by the
    // kernels, and a state passed as both in and out is read by each thread before it writes it;
    // tpc is a power of two <= min(N, 32), so a channel's threads are consecutive lanes of one
    // warp and 128 threads hold a whole number of channels (or of N-thread lanes).
    unsafe { launch.launch(cfg) }.map_err(driver("launching selective_scan_fwd"))?;
    Ok(())
}
