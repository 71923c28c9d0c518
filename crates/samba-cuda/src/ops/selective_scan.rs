//! Mamba-1's selective scan forward on the GPU; the kernel is `selective_scan_fwd` in
//! kernels/selective_scan.cu.

use cudarc::driver::{CudaView, DevicePtrMut, LaunchConfig, PushKernelArg};
use samba_cpu::ops::selective_scan::ScanDims;

use super::{grid_dim, StateIn, StateOut};
use crate::compile::SELECTIVE_SCAN;
use crate::error::{check_len, check_rows, driver, to_i32, Result};
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
    selective_scan_fwd_planned(
        dev,
        out,
        inp,
        dims,
        ScanStrides::contiguous(dims),
        state_in,
        state_out,
        ScanPlan::for_dims(dims),
    )
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
    launch::<T>(
        dev,
        ScanPlan::for_dims(dims),
        o_p,
        st_p,
        st_p,
        inp,
        dims,
        strides,
    )
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

/// Threads per block of the scan kernels (SCAN_THREADS).
const SCAN_THREADS: usize = 128;
/// Steps a block stages at a time (SCAN_STEPS): a time split is a whole number of them.
const SCAN_STEPS: usize = 16;
/// Threads per block of the carry kernel.
const CARRY_THREADS: usize = 256;
/// Above this many threads per channel the batch alone does not fill the GPU for one pass of
/// the chunked kernel (which then has too few channels per block to hide its chunk-by-chunk
/// latency; measured on the H200: at batch 4 x 4096 tokens of Samba-1.3B the chunked kernel
/// with 16 threads per channel took 8.8 ms, the lanes kernel 5.1 ms; at batch 128 x 1024 the
/// chunked one is several times faster): long sequences are then cut into time splits.
const CHUNKED_MAX_TPC: usize = 4;
/// Threads that keep the H200 busy: about two waves of 132 multiprocessors x 2048 threads.
const TARGET_THREADS: usize = 2 * 132 * 2048;
/// The shortest time split worth its second pass.
const SPLIT_MIN_LEN: usize = 64;

/// How one scan is spread over the GPU (see kernels/selective_scan.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanPlan {
    /// One pass of the chunked kernel, `tpc` threads per channel: the batch fills the GPU.
    Chunked { tpc: usize },
    /// One pass of the lanes kernel (d_state threads per channel): few short sequences
    /// (decoding).
    Lanes,
    /// Few long sequences: each cut into `n_split` pieces of `split_len` steps, scanned in
    /// parallel from zero, their states carried across in order, then scanned again from the
    /// carried states (two passes of the chunked kernel with one thread per channel, and the
    /// carry kernel between them).
    Split { n_split: usize, split_len: usize },
}

impl ScanPlan {
    /// The plan for `dims`: one pass when the batch fills the GPU, time splits when the
    /// sequences are long enough to cut, else the lanes kernel. `SAMBA_SCAN=chunked|lanes|split`
    /// forces one kind (for comparisons), where it applies.
    pub fn for_dims(dims: ScanDims) -> ScanPlan {
        let tpc = threads_per_channel(dims);
        let forced = std::env::var("SAMBA_SCAN").unwrap_or_default();
        let split = ScanPlan::split(dims);
        match forced.as_str() {
            "lanes" => return ScanPlan::Lanes,
            "chunked" => return ScanPlan::Chunked { tpc },
            "split" if split.is_some() => return split.unwrap_or(ScanPlan::Lanes),
            _ => {}
        }
        if tpc <= CHUNKED_MAX_TPC {
            ScanPlan::Chunked { tpc }
        } else {
            split.unwrap_or(ScanPlan::Lanes)
        }
    }

    /// Time splits giving about [`TARGET_THREADS`] threads at one thread per channel, none
    /// shorter than [`SPLIT_MIN_LEN`] steps; `None` when the sequences are too short to cut.
    pub fn split(dims: ScanDims) -> Option<ScanPlan> {
        let channels = (dims.batch * dims.d_inner).max(1);
        let pieces = TARGET_THREADS
            .div_ceil(channels)
            .min(dims.seq / SPLIT_MIN_LEN)
            .min(65535);
        if pieces < 2 {
            return None;
        }
        Some(ScanPlan::with_split_len(dims, dims.seq.div_ceil(pieces)))
    }

    /// Time splits of `len` steps (rounded up to whole staging chunks).
    pub fn with_split_len(dims: ScanDims, len: usize) -> ScanPlan {
        let split_len = len.max(1).next_multiple_of(SCAN_STEPS);
        ScanPlan::Split {
            n_split: dims.seq.div_ceil(split_len).max(1),
            split_len,
        }
    }
}

/// Threads sharing one channel's d_state states: the fewest that still give about two waves of
/// threads on the GPU (132 multiprocessors x 2048 threads on the H200), a power of two <= d_state.
fn threads_per_channel(dims: ScanDims) -> usize {
    let channels = (dims.batch * dims.d_inner).max(1);
    TARGET_THREADS
        .div_ceil(channels)
        .next_power_of_two()
        .clamp(1, dims.d_state.min(32))
}

/// The scan with an explicit plan (tests run every plan on the same inputs): state_in and
/// state_out as in [`selective_scan_fwd`], inputs read with `strides`.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_fwd_planned<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    inp: &ScanBuffers<'_, T>,
    dims: ScanDims,
    strides: ScanStrides,
    state_in: Option<&dyn StateIn<f32>>,
    state_out: Option<&mut dyn StateOut<f32>>,
    plan: ScanPlan,
) -> Result<()> {
    const OP: &str = "selective_scan_fwd";
    check(OP, out.len(), inp, dims, strides)?;
    for (what, st) in [
        ("state_in", state_in.as_ref().map(|s| s.elems())),
        ("state_out", state_out.as_ref().map(|s| s.elems())),
    ] {
        if let Some(n) = st {
            check_len(OP, what, n, dims.state_len(), "[batch, d_inner, d_state]")?;
        }
    }
    if let ScanPlan::Chunked { tpc } = plan {
        if !tpc.is_power_of_two() || tpc > dims.d_state {
            return Err(CudaError::Unsupported {
                op: OP,
                reason: format!(
                    "{tpc} threads per channel (a power of two <= d_state = {})",
                    dims.d_state
                ),
            });
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
    launch::<T>(dev, plan, o_p, so_p, si_p, inp, dims, strides)
}

/// Launches `plan` (dims and buffers checked by the caller) on raw pointers: out, state_out,
/// state_in (0 = none).
#[allow(clippy::too_many_arguments)]
fn launch<T: Elem>(
    dev: &CudaDevice,
    plan: ScanPlan,
    o_p: u64,
    so_p: u64,
    si_p: u64,
    inp: &ScanBuffers<'_, T>,
    dims: ScanDims,
    strides: ScanStrides,
) -> Result<()> {
    if dims.batch == 0 || dims.d_inner == 0 || dims.seq == 0 {
        return Ok(());
    }
    let pass = |kernel, out, state_out, state_in, tpc, split_len, n_split, dsum| Pass {
        kernel,
        out,
        state_out,
        state_in,
        tpc,
        split_len,
        n_split,
        dsum,
    };
    match plan {
        ScanPlan::Chunked { tpc } => launch_pass(
            dev,
            inp,
            dims,
            strides,
            pass("selective_scan_fwd", o_p, so_p, si_p, tpc, dims.seq, 1, 0),
        ),
        ScanPlan::Lanes => launch_pass(
            dev,
            inp,
            dims,
            strides,
            pass(
                "selective_scan_lanes_fwd",
                o_p,
                so_p,
                si_p,
                0,
                dims.seq,
                1,
                0,
            ),
        ),
        ScanPlan::Split { n_split, split_len } => {
            let pieces = dims.batch * n_split;
            // Scratch per call: stream-ordered allocations from the driver's pool (no sync).
            // SAFETY (of the uninitialised allocations): the local pass writes every element of
            // both (one (piece, channel, state) per thread of its grid) before anything reads them.
            let (mut h_loc, mut dsum) = unsafe {
                (
                    dev.stream()
                        .alloc::<f32>(pieces * dims.d_inner * dims.d_state)
                        .map_err(driver("allocating the states of the time splits"))?,
                    dev.stream()
                        .alloc::<f32>(pieces * dims.d_inner)
                        .map_err(driver("allocating the step sums of the time splits"))?,
                )
            };
            let s = dev.stream();
            let (h_p, _g0) = h_loc.device_ptr_mut(s);
            let (d_p, _g1) = dsum.device_ptr_mut(s);
            // 1. every piece from h = 0: its end state and its sum of steps
            launch_pass(
                dev,
                inp,
                dims,
                strides,
                pass("selective_scan_fwd", 0, h_p, 0, 1, split_len, n_split, d_p),
            )?;
            // 2. the state entering each piece, and the state after the sequence
            launch_carry(dev, inp, dims, n_split, h_p, d_p, si_p, so_p)?;
            // 3. every piece again from its entering state, writing y
            launch_pass(
                dev,
                inp,
                dims,
                strides,
                pass("selective_scan_fwd", o_p, 0, h_p, 1, split_len, n_split, 0),
            )
        }
    }
}

/// One launch of a scan kernel: raw pointers (0 = none) and the split of time.
struct Pass {
    kernel: &'static str,
    out: u64,
    state_out: u64,
    state_in: u64,
    /// Threads per channel (chunked kernel only).
    tpc: usize,
    split_len: usize,
    n_split: usize,
    dsum: u64,
}

fn launch_pass<T: Elem>(
    dev: &CudaDevice,
    inp: &ScanBuffers<'_, T>,
    dims: ScanDims,
    strides: ScanStrides,
    p: Pass,
) -> Result<()> {
    const OP: &str = "selective_scan_fwd";
    let n_st = dims.d_state;
    let lanes = p.kernel == "selective_scan_lanes_fwd";
    let grid = if lanes {
        let threads = dims.batch * dims.d_inner * n_st;
        (
            grid_dim(
                OP,
                "batch * d_inner * d_state / 128",
                threads.div_ceil(SCAN_THREADS),
                u32::MAX,
            )?,
            1,
            1,
        )
    } else {
        (
            grid_dim(
                OP,
                "channel blocks",
                dims.d_inner.div_ceil(SCAN_THREADS / p.tpc),
                u32::MAX,
            )?,
            grid_dim(OP, "batch", dims.batch, 65535)?,
            grid_dim(OP, "time splits", p.n_split, 65535)?,
        )
    };
    let batch = to_i32(OP, "batch", dims.batch)?;
    let seq = to_i32(OP, "seq", dims.seq)?;
    let d_inner = to_i32(OP, "d_inner", dims.d_inner)?;
    let z_stride = to_i32(OP, "z_stride", strides.z)?;
    let bc_stride = to_i32(OP, "bc_stride", strides.bc)?;
    let tpc = p.tpc as i32;
    let split_len = to_i32(OP, "split_len", p.split_len)?;
    let name = format!("{}_{}_n{n_st}", p.kernel, T::SUFFIX);
    let f = dev.function(&SELECTIVE_SCAN, &name, 0)?;
    let s = dev.stream();
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&p.out)
        .arg(&p.state_out)
        .arg(&inp.u)
        .arg(&inp.delta_raw)
        .arg(&inp.delta_bias)
        .arg(&inp.a_log)
        .arg(&inp.b)
        .arg(&inp.c)
        .arg(&inp.d_skip)
        .arg(&inp.z)
        .arg(&p.state_in)
        .arg(&batch)
        .arg(&seq)
        .arg(&d_inner)
        .arg(&z_stride)
        .arg(&bc_stride);
    if !lanes {
        launch.arg(&tpc).arg(&split_len).arg(&p.dsum);
    }
    let cfg = LaunchConfig {
        grid_dim: grid,
        block_dim: (SCAN_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match selective_scan_fwd_<T>_n<N>(T*, float*, 8 x const T*, const float*,
    // int x 6, float*) or selective_scan_lanes_fwd_<T>_n<N>(T*, float*, 8 x const T*, const
    // float*, int x 5); every input length was checked against dims and strides (`check`); the
    // states hold [batch, n_split, d_inner, d_state] (the caller's [batch, d_inner, d_state] when
    // n_split = 1, else the split scratch) and dsum [batch, n_split, d_inner]; null pointers are
    // skipped by the kernels, and a state passed as both in and out is read by each thread before
    // it writes it; tpc is a power of two <= min(N, 32), so a channel's threads are consecutive
    // lanes of one warp and 128 threads hold a whole number of channels (or of N-thread lanes).
    unsafe { launch.launch(cfg) }.map_err(driver("launching selective_scan_fwd"))?;
    Ok(())
}

/// The carry between time splits (selective_scan_carry in kernels/selective_scan.cu).
#[allow(clippy::too_many_arguments)]
fn launch_carry<T: Elem>(
    dev: &CudaDevice,
    inp: &ScanBuffers<'_, T>,
    dims: ScanDims,
    n_split: usize,
    h_loc: u64,
    dsum: u64,
    state_in: u64,
    state_out: u64,
) -> Result<()> {
    const OP: &str = "selective_scan_carry";
    let threads = dims.batch * dims.d_inner * dims.d_state;
    let blocks = grid_dim(
        OP,
        "batch * d_inner * d_state / 256",
        threads.div_ceil(CARRY_THREADS),
        u32::MAX,
    )?;
    let batch = to_i32(OP, "batch", dims.batch)?;
    let n_split_i = to_i32(OP, "n_split", n_split)?;
    let d_inner = to_i32(OP, "d_inner", dims.d_inner)?;
    let d_state = to_i32(OP, "d_state", dims.d_state)?;
    let f = dev.function(&SELECTIVE_SCAN, &format!("{OP}_{}", T::SUFFIX), 0)?;
    let s = dev.stream();
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&h_loc)
        .arg(&dsum)
        .arg(&inp.a_log)
        .arg(&state_in)
        .arg(&state_out)
        .arg(&batch)
        .arg(&n_split_i)
        .arg(&d_inner)
        .arg(&d_state);
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (CARRY_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match selective_scan_carry_<T>(float*, const float*, const T*, const
    // float*, float*, int x 4); h_loc holds [batch, n_split, d_inner, d_state] and dsum
    // [batch, n_split, d_inner] (allocated by the caller for these dims), a_log [d_inner,
    // d_state] and the states [batch, d_inner, d_state] (checked); one thread per (b, e, n),
    // which reads its state_in element before writing its state_out element.
    unsafe { launch.launch(cfg) }.map_err(driver("launching selective_scan_carry"))?;
    Ok(())
}
