//! Mamba-1's selective scan forward on the GPU; the kernel is `selective_scan_fwd` in
//! kernels/selective_scan.cu.

use cudarc::driver::{CudaView, DevicePtrMut, LaunchConfig, PushKernelArg};
use samba_cpu::ops::selective_scan::ScanDims;

use super::{entry, StateIn, StateOut};
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
    let n_st = dims.d_state;
    if dims.d_inner == 0 || n_st == 0 || !n_st.is_power_of_two() || n_st > 32 {
        return Err(CudaError::Unsupported {
            op: OP,
            reason: format!(
                "d_state = {n_st} (must be a power of two <= 32) and d_inner = {} (>= 1)",
                dims.d_inner
            ),
        });
    }
    let lanes = dims.batch * dims.seq * dims.d_inner;
    let states = dims.batch * dims.seq * n_st;
    let e = dims.d_inner;
    const LANES: &str = "[batch, seq, d_inner]";
    check_len(OP, "out", out.len(), lanes, LANES)?;
    check_len(OP, "u", inp.u.len(), lanes, LANES)?;
    check_len(OP, "delta_raw", inp.delta_raw.len(), lanes, LANES)?;
    check_len(OP, "z", inp.z.len(), lanes, LANES)?;
    check_len(OP, "delta_bias", inp.delta_bias.len(), e, "[d_inner]")?;
    check_len(OP, "d_skip", inp.d_skip.len(), e, "[d_inner]")?;
    check_len(OP, "a_log", inp.a_log.len(), e * n_st, "[d_inner, d_state]")?;
    check_len(OP, "b", inp.b.len(), states, "[batch, seq, d_state]")?;
    check_len(OP, "c", inp.c.len(), states, "[batch, seq, d_state]")?;
    if let Some(st) = &state_in {
        check_len(
            OP,
            "state_in",
            st.elems(),
            dims.state_len(),
            "[batch, d_inner, d_state]",
        )?;
    }
    if let Some(st) = &state_out {
        check_len(
            OP,
            "state_out",
            st.elems(),
            dims.state_len(),
            "[batch, d_inner, d_state]",
        )?;
    }
    let threads = dims.batch * e * n_st;
    if threads == 0 {
        return Ok(());
    }
    let blocks = u32::try_from(threads.div_ceil(128)).map_err(|_| CudaError::Unsupported {
        op: OP,
        reason: format!("{threads} threads is more than one grid holds"),
    })?;
    let batch = to_i32(OP, "batch", dims.batch)?;
    let seq = to_i32(OP, "seq", dims.seq)?;
    let d_inner = to_i32(OP, "d_inner", e)?;
    let d_state = n_st as i32;
    let f = dev.function(&SELECTIVE_SCAN, &entry::<T>(OP), 0)?;
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
        .arg(&d_state);
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match selective_scan_fwd_<T>(T*, float*, 8 x const T*, const float*,
    // int, int, int, int); every length was checked above against dims; null states are
    // skipped by the kernel; 128 threads per block is a whole number of d_state-thread lanes.
    unsafe { launch.launch(cfg) }.map_err(driver("launching selective_scan_fwd"))?;
    Ok(())
}
