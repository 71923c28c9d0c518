//! Causal (optionally sliding-window) attention forward on the GPU, flash style; the kernel is
//! `attention_fwd` in kernels/attention.cu.

use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use samba_cpu::ops::attention::QkvDims;

use super::entry;
use super::rope::check_qkv_dims;
use crate::compile::ATTENTION;
use crate::error::{check_len, driver, to_i32, Result};
use crate::{CudaDevice, CudaError, Elem};

/// Queries per block and keys per tile (ATT_BQ, ATT_BK in the kernel).
const BQ: usize = 16;
const BK: usize = 32;
/// The kernel's per-lane output registers cover head_dim <= 32 * 8.
const MAX_HEAD_DIM: usize = 256;

/// Attention over the roped fused `qkv` [batch, seq, qkv_dim] (grouped-interleaved layout, see
/// `QkvDims`), as the CPU's `attention_fwd`: `out` [batch, seq, heads * head_dim], `lse`
/// [batch, heads, seq] (f32); `window` Some(w) lets query t see keys t - (w - 1)..=t, None is
/// full causal.
pub fn attention_fwd<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    lse: &mut impl DevicePtrMut<f32>,
    qkv: &impl DevicePtr<T>,
    dims: QkvDims,
    window: Option<usize>,
) -> Result<()> {
    const OP: &str = "attention_fwd";
    check_qkv_dims(OP, dims)?;
    if dims.head_dim > MAX_HEAD_DIM || window == Some(0) {
        return Err(CudaError::Unsupported {
            op: OP,
            reason: format!(
                "head_dim = {} (at most {MAX_HEAD_DIM}), window = {window:?} (at least 1)",
                dims.head_dim
            ),
        });
    }
    let tokens = dims.batch * dims.seq;
    check_len(
        OP,
        "qkv",
        qkv.len(),
        tokens * dims.qkv_dim(),
        "[batch, seq, (heads + 2 kv_heads) head_dim]",
    )?;
    check_len(
        OP,
        "out",
        out.len(),
        tokens * dims.out_dim(),
        "[batch, seq, heads * head_dim]",
    )?;
    check_len(
        OP,
        "lse",
        lse.len(),
        dims.batch * dims.heads * dims.seq,
        "[batch, heads, seq]",
    )?;
    if tokens == 0 || dims.heads == 0 {
        return Ok(());
    }
    let too_big = |what: &str| CudaError::Unsupported {
        op: OP,
        reason: format!("{what} is more than one grid dimension holds"),
    };
    let q_tiles = u32::try_from(dims.seq.div_ceil(BQ)).map_err(|_| too_big("seq"))?;
    let heads_u = u32::try_from(dims.heads)
        .ok()
        .filter(|&h| h <= 65535)
        .ok_or_else(|| too_big("heads"))?;
    let batch_u = u32::try_from(dims.batch)
        .ok()
        .filter(|&b| b <= 65535)
        .ok_or_else(|| too_big("batch"))?;
    let hd = dims.head_dim;
    let smem = (BQ * hd + BK * (hd + 1) + BK * hd) * std::mem::size_of::<f32>();
    let f = dev.function(&ATTENTION, &entry::<T>(OP), smem)?;
    let seq = to_i32(OP, "seq", dims.seq)?;
    let heads = to_i32(OP, "heads", dims.heads)?;
    let kv_heads = to_i32(OP, "kv_heads", dims.kv_heads)?;
    let head_dim = hd as i32;
    // 0 = no window; a window of at least seq is the same as none.
    let win = match window {
        Some(w) if w < dims.seq => w as i32,
        _ => 0,
    };
    let s = dev.stream();
    let (o_p, _g0) = out.device_ptr_mut(s);
    let (l_p, _g1) = lse.device_ptr_mut(s);
    let (q_p, _g2) = qkv.device_ptr(s);
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&o_p)
        .arg(&l_p)
        .arg(&q_p)
        .arg(&seq)
        .arg(&heads)
        .arg(&kv_heads)
        .arg(&head_dim)
        .arg(&win);
    let cfg = LaunchConfig {
        grid_dim: (q_tiles, heads_u, batch_u),
        block_dim: (128, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    // SAFETY: arguments match attention_fwd_<T>(T*, float*, const T*, int, int, int, int, int);
    // qkv, out and lse hold the elements their shapes give (checked above); head_dim <= 256 as
    // the kernel's registers need; the dynamic shared memory is the kernel's Q, K and V tiles
    // and the function's limit was raised to it when above 48 KiB.
    unsafe { launch.launch(cfg) }.map_err(driver("launching attention_fwd"))?;
    Ok(())
}
