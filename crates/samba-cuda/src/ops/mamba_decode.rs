//! The selective-scan step of Mamba for one token per sequence, with dt_proj and its softplus
//! fused in front (`mamba_scan_step_fwd` in kernels/mamba_decode.cu): the decoding step's scan
//! without the dt_proj GEMM or a separate delta buffer. The CPU's twin is `linear_fwd` (dt_proj,
//! rounded to T as stored) followed by `selective_scan_fwd` with seq = 1 and the state.

use cudarc::driver::{DevicePtrMut, LaunchConfig};
use samba_cpu::ops::selective_scan::ScanDims;

use super::pdl::{self, Args};
use super::{entry, StateIn};
use crate::compile::MAMBA_DECODE;
use crate::error::{check_len, to_i32, Result};
use crate::{CudaDevice, CudaError, Elem};

/// The inputs of one scan step, all (but z) whole buffers of their shape.
pub struct ScanStepInputs<'a, T> {
    /// [batch, R + 2N]: x_proj's output [dt_low | B | C].
    pub x_dbl: &'a dyn StateIn<T>,
    /// [batch, E]: the conv's output.
    pub u: &'a dyn StateIn<T>,
    /// z [batch, E] with rows `z_stride` apart (the second half of in_proj's [x_in | z]).
    pub z: &'a dyn StateIn<T>,
    pub z_stride: usize,
    /// [E, R]: dt_proj.weight; [E]: dt_proj.bias.
    pub dt_w: &'a dyn StateIn<T>,
    pub dt_b: &'a dyn StateIn<T>,
    /// [E, N]
    pub a_log: &'a dyn StateIn<T>,
    /// [E]
    pub d_skip: &'a dyn StateIn<T>,
}

/// Whether [`mamba_scan_step_fwd`] takes this d_state (its lanes: a power of two up to 32).
pub fn scan_step_applies(d_state: usize) -> bool {
    d_state.is_power_of_two() && d_state <= 32
}

/// y [batch, E] = the scan step of one token per sequence (dims.seq = 1) with dt_rank `dt_rank`:
///   delta = softplus(dt_low @ dt_w^T + dt_b),  h = exp(delta A) h + delta u B,
///   y = (h . C + D u) silu(z)
/// with the SSM state h [batch, E, N] (f32) updated in place.
pub fn mamba_scan_step_fwd<T: Elem>(
    dev: &CudaDevice,
    y: &mut impl DevicePtrMut<T>,
    h: &mut impl DevicePtrMut<f32>,
    inp: &ScanStepInputs<'_, T>,
    dims: ScanDims,
    dt_rank: usize,
) -> Result<()> {
    const OP: &str = "mamba_scan_step_fwd";
    let ScanDims {
        batch,
        seq,
        d_inner: e,
        d_state: n,
    } = dims;
    if seq != 1 || !scan_step_applies(n) || e == 0 {
        return Err(CudaError::Unsupported {
            op: OP,
            reason: format!(
                "one token per sequence (seq {seq}), d_state a power of two up to 32 ({n}), d_inner >= 1 ({e})"
            ),
        });
    }
    let xdim = dt_rank + 2 * n;
    check_len(OP, "y", y.len(), batch * e, "[batch, d_inner]")?;
    check_len(OP, "h", h.len(), batch * e * n, "[batch, d_inner, d_state]")?;
    check_len(
        OP,
        "x_dbl",
        inp.x_dbl.elems(),
        batch * xdim,
        "[batch, dt_rank + 2 d_state]",
    )?;
    check_len(OP, "u", inp.u.elems(), batch * e, "[batch, d_inner]")?;
    if batch > 0 && (inp.z_stride < e || inp.z.elems() < (batch - 1) * inp.z_stride + e) {
        return Err(CudaError::Unsupported {
            op: OP,
            reason: format!(
                "z: {batch} rows of {e} values {} apart do not fit {} elements",
                inp.z_stride,
                inp.z.elems()
            ),
        });
    }
    check_len(
        OP,
        "dt_w",
        inp.dt_w.elems(),
        e * dt_rank,
        "[d_inner, dt_rank]",
    )?;
    check_len(OP, "dt_b", inp.dt_b.elems(), e, "[d_inner]")?;
    check_len(OP, "a_log", inp.a_log.elems(), e * n, "[d_inner, d_state]")?;
    check_len(OP, "d_skip", inp.d_skip.elems(), e, "[d_inner]")?;
    if batch == 0 {
        return Ok(());
    }
    let batch_u = u32::try_from(batch)
        .ok()
        .filter(|&b| b <= 65535)
        .ok_or_else(|| CudaError::Unsupported {
            op: OP,
            reason: format!("batch {batch} is more than one grid dimension holds"),
        })?;
    let threads = e * n;
    let blocks = u32::try_from(threads.div_ceil(128)).map_err(|_| CudaError::Unsupported {
        op: OP,
        reason: format!("{threads} lanes are more than one grid holds"),
    })?;
    let s = dev.stream();
    let (y_p, _g0) = y.device_ptr_mut(s);
    let (h_p, _g1) = h.device_ptr_mut(s);
    let (x_p, _g2) = inp.x_dbl.ptr(s);
    let (u_p, _g3) = inp.u.ptr(s);
    let (z_p, _g4) = inp.z.ptr(s);
    let (w_p, _g5) = inp.dt_w.ptr(s);
    let (b_p, _g6) = inp.dt_b.ptr(s);
    let (a_p, _g7) = inp.a_log.ptr(s);
    let (d_p, _g8) = inp.d_skip.ptr(s);
    let args = Args::new()
        .ptr(y_p)
        .ptr(h_p)
        .ptr(x_p)
        .ptr(u_p)
        .ptr(z_p)
        .i32(to_i32(OP, "z_stride", inp.z_stride)?)
        .ptr(w_p)
        .ptr(b_p)
        .ptr(a_p)
        .ptr(d_p)
        .i32(to_i32(OP, "d_inner", e)?)
        .i32(n as i32)
        .i32(to_i32(OP, "dt_rank", dt_rank)?);
    let f = dev.function(&MAMBA_DECODE, &entry::<T>(OP), 0)?;
    let cfg = LaunchConfig {
        grid_dim: (blocks, batch_u, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match mamba_scan_step_fwd_<T>(T*, float*, const T*, const T*, const T*,
    // int, const T*, const T*, const T*, const T*, int, int, int); every buffer holds what its
    // shape needs (checked above); d_state is a power of two <= 32, so a channel's lanes sit in
    // one warp and the grid covers d_inner * d_state lanes per sequence.
    unsafe { pdl::launch(dev, &f, cfg, &args, OP) }
}
