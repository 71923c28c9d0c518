//! The device side of a decode state's bookkeeping: writing a chunk's keys and values into the
//! ring caches, and advancing the positions; the kernels are in kernels/state.cu.

use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use samba_cpu::ops::attention::QkvDims;

use super::pdl::{self, Args};
use super::rope::check_qkv_dims;
use super::{entry, grid_1d};
use crate::compile::STATE;
use crate::error::{check_len, driver, to_i32, Result};
use crate::{CudaDevice, Elem};

/// Stores the keys and values of a chunk (`qkv` [batch, seq, qkv_dim], roped) into the rings
/// [batch, cap, kv_heads * head_dim]: token t of sequence b (position pos0[b] + t) goes to slot
/// (pos0[b] + t) % cap; only the last min(seq, cap) tokens are stored. Run after the chunk's
/// attention, which reads the ring as it was before the chunk.
#[allow(clippy::too_many_arguments)]
pub fn kv_cache_write<T: Elem>(
    dev: &CudaDevice,
    k_ring: &mut impl DevicePtrMut<T>,
    v_ring: &mut impl DevicePtrMut<T>,
    qkv: &impl DevicePtr<T>,
    pos0: &impl DevicePtr<i32>,
    dims: QkvDims,
    cap: usize,
) -> Result<()> {
    const OP: &str = "kv_cache_write";
    check_qkv_dims(OP, dims)?;
    let kv_dim = dims.kv_heads * dims.head_dim;
    let ring = dims.batch * cap * kv_dim;
    check_len(
        OP,
        "k_ring",
        k_ring.len(),
        ring,
        "[batch, cap, kv_heads * head_dim]",
    )?;
    check_len(
        OP,
        "v_ring",
        v_ring.len(),
        ring,
        "[batch, cap, kv_heads * head_dim]",
    )?;
    check_len(
        OP,
        "qkv",
        qkv.len(),
        dims.batch * dims.seq * dims.qkv_dim(),
        "[batch, seq, qkv_dim]",
    )?;
    check_len(OP, "pos0", pos0.len(), dims.batch, "[batch]")?;
    let n = dims.batch * dims.seq.min(cap) * kv_dim;
    if n == 0 {
        return Ok(());
    }
    let f = dev.function(&STATE, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (k_p, _g0) = k_ring.device_ptr_mut(s);
    let (v_p, _g1) = v_ring.device_ptr_mut(s);
    let (q_p, _g2) = qkv.device_ptr(s);
    let (p_p, _g3) = pos0.device_ptr(s);
    let batch = to_i32(OP, "batch", dims.batch)?;
    let seq = to_i32(OP, "seq", dims.seq)?;
    let heads = to_i32(OP, "heads", dims.heads)?;
    let kv_heads = to_i32(OP, "kv_heads", dims.kv_heads)?;
    let head_dim = to_i32(OP, "head_dim", dims.head_dim)?;
    let cap_i = to_i32(OP, "cap", cap)?;
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&k_p)
        .arg(&v_p)
        .arg(&q_p)
        .arg(&p_p)
        .arg(&batch)
        .arg(&seq)
        .arg(&heads)
        .arg(&kv_heads)
        .arg(&head_dim)
        .arg(&cap_i);
    // SAFETY: arguments match kv_cache_write_<T>(T*, T*, const T*, const int*, int x 6); the
    // rings hold batch * cap * kv_dim elements and qkv batch * seq * qkv_dim (checked); slots
    // are taken modulo cap > 0 (n = 0 returned above when cap = 0).
    unsafe { launch.launch(grid_1d(n)) }.map_err(driver("launching kv_cache_write"))?;
    Ok(())
}

/// pos[b] += by for every sequence.
pub fn positions_advance(
    dev: &CudaDevice,
    pos: &mut impl DevicePtrMut<i32>,
    by: usize,
) -> Result<()> {
    const OP: &str = "positions_advance";
    let batch = pos.len();
    if batch == 0 || by == 0 {
        return Ok(());
    }
    let f = dev.function(&STATE, OP, 0)?;
    let s = dev.stream();
    let (p_p, _g) = pos.device_ptr_mut(s);
    let batch_i = to_i32(OP, "batch", batch)?;
    let by_i = to_i32(OP, "by", by)?;
    let args = Args::new().ptr(p_p).i32(batch_i).i32(by_i);
    let cfg = LaunchConfig {
        grid_dim: (batch.div_ceil(128) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match positions_advance(int*, int, int); pos holds batch elements and
    // the kernel guards b < batch (and waits, pdl_wait, before it reads).
    unsafe { pdl::launch(dev, &f, cfg, &args, OP) }
}
