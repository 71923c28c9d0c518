//! Causal (optionally sliding-window) attention forward on the GPU, flash style, in three
//! kernels with one meaning:
//!
//! - `attention_fwd` (kernels/attention.cu): SIMT, any head_dim <= 256, f32 and bf16 storage;
//! - `attention_mma_fwd` (kernels/attention_mma.cu): tensor cores (mma.sync, bf16 in, f32
//!   accumulate), bf16 storage with head_dim 64 or 128: the fast path of prefill;
//! - `attention_decode_fwd` (kernels/attention_decode.cu): one new token per sequence against
//!   its ring of cached keys, split over the keys (flash-decoding): the decoding step.
//!
//! The first two also run a chunk of a longer sequence whose earlier keys sit in a ring cache
//! ([`KvRing`]), as the CPU's `attention_cached_fwd` does.

use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use samba_cpu::ops::attention::QkvDims;

use super::pdl::{self, Args};
use super::rope::check_qkv_dims;
use super::{entry, StateIn, StateOut};
use crate::compile::{ATTENTION, ATTENTION_DECODE, ATTENTION_MMA};
use crate::error::{check_len, driver, to_i32, Result};
use crate::{CudaDevice, CudaError, Elem};

/// Queries per block and keys per tile of the SIMT kernel (ATT_BQ, ATT_BK in the kernel).
const BQ: usize = 16;
const BK: usize = 32;
/// The SIMT kernel's per-lane output registers cover head_dim <= 32 * 8.
const MAX_HEAD_DIM: usize = 256;
/// Queries per block and keys per tile of the tensor-core kernel (MMA_BQ, MMA_BK).
const MMA_BQ: usize = 64;
const MMA_BK: usize = 64;
/// Values per lane of the decoding kernel (DEC_MAX_DPL), and its largest number of splits
/// (DEC_MAX_SPLITS).
const DEC_MAX_DPL: usize = 8;
const DEC_MAX_SPLITS: usize = 1024;

/// Which kernel runs a (prefill) attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// The tensor-core kernel where it applies (bf16, head_dim 64 or 128), else SIMT; the
    /// environment variable `SAMBA_ATTENTION=simt` forces SIMT.
    Auto,
    Simt,
    /// Tensor cores; an error where they do not apply.
    TensorCore,
}

impl AttentionKernel {
    /// Whether the tensor-core kernel handles storage T with this head_dim.
    pub fn tensor_core_applies<T: Elem>(head_dim: usize) -> bool {
        T::SUFFIX == "bf16" && (head_dim == 64 || head_dim == 128)
    }

    fn use_tensor_cores<T: Elem>(self, head_dim: usize) -> Result<bool> {
        let applies = Self::tensor_core_applies::<T>(head_dim);
        match self {
            AttentionKernel::Simt => Ok(false),
            AttentionKernel::TensorCore if !applies => Err(CudaError::Unsupported {
                op: "attention_mma_fwd",
                reason: format!(
                    "the tensor-core kernel needs bf16 storage and head_dim 64 or 128 (got {} storage, head_dim {head_dim})",
                    T::SUFFIX
                ),
            }),
            AttentionKernel::TensorCore => Ok(true),
            AttentionKernel::Auto => {
                let forced_simt = std::env::var("SAMBA_ATTENTION").is_ok_and(|v| v == "simt");
                Ok(applies && !forced_simt)
            }
        }
    }
}

/// The keys and values of the positions before a chunk, per sequence: rings
/// [batch, cap, kv_heads * head_dim] where position p sits at slot p % cap, and the position of
/// each sequence's first chunk token, `pos` [batch] (i32, on the device). Every key a chunk
/// query can see must still be in the ring: cap >= window - 1 for a window, else cap >= every
/// position (the state that owns the rings sizes them so).
pub struct KvRing<'a, T> {
    pub k: &'a dyn StateIn<T>,
    pub v: &'a dyn StateIn<T>,
    pub pos: &'a dyn StateIn<i32>,
    pub cap: usize,
}

/// Attention over the roped fused `qkv` [batch, seq, qkv_dim] (grouped-interleaved layout, see
/// `QkvDims`), as the CPU's `attention_fwd`: `out` [batch, seq, heads * head_dim], `lse`
/// [batch, heads, seq] (f32); `window` Some(w) lets query t see keys t - (w - 1)..=t, None is
/// full causal. bf16 storage with head_dim 64 or 128 runs on the tensor cores.
pub fn attention_fwd<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    lse: &mut impl DevicePtrMut<f32>,
    qkv: &impl DevicePtr<T>,
    dims: QkvDims,
    window: Option<usize>,
) -> Result<()> {
    attention_chunk_fwd(
        dev,
        out,
        Some(lse),
        qkv,
        dims,
        window,
        None,
        AttentionKernel::Auto,
    )
}

/// Attention of a chunk: as [`attention_fwd`], and with `cache` the chunk of sequence b starts
/// at position `cache.pos[b]` and also sees the earlier keys of its ring (the CPU's
/// `attention_cached_fwd`; the ring is not updated here: see `kv_cache_write`). `lse` may be
/// None. `kernel` picks the implementation.
#[allow(clippy::too_many_arguments)]
pub fn attention_chunk_fwd<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    lse: Option<&mut dyn StateOut<f32>>,
    qkv: &impl DevicePtr<T>,
    dims: QkvDims,
    window: Option<usize>,
    cache: Option<KvRing<'_, T>>,
    kernel: AttentionKernel,
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
    if let Some(l) = &lse {
        check_len(
            OP,
            "lse",
            l.elems(),
            dims.batch * dims.heads * dims.seq,
            "[batch, heads, seq]",
        )?;
    }
    if let Some(c) = &cache {
        check_ring(OP, c, dims)?;
    }
    if tokens == 0 || dims.heads == 0 {
        return Ok(());
    }
    let mma = kernel.use_tensor_cores::<T>(dims.head_dim)?;
    let too_big = |what: &str| CudaError::Unsupported {
        op: OP,
        reason: format!("{what} is more than one grid dimension holds"),
    };
    let q_tiles = u32::try_from(dims.seq.div_ceil(if mma { MMA_BQ } else { BQ }))
        .map_err(|_| too_big("seq"))?;
    let heads_u = u32::try_from(dims.heads)
        .ok()
        .filter(|&h| h <= 65535)
        .ok_or_else(|| too_big("heads"))?;
    let batch_u = u32::try_from(dims.batch)
        .ok()
        .filter(|&b| b <= 65535)
        .ok_or_else(|| too_big("batch"))?;
    let hd = dims.head_dim;
    let seq = to_i32(OP, "seq", dims.seq)?;
    let heads = to_i32(OP, "heads", dims.heads)?;
    let kv_heads = to_i32(OP, "kv_heads", dims.kv_heads)?;
    let head_dim = hd as i32;
    // 0 = no window. Without a cache a window of at least seq is the same as none; with one,
    // positions go past seq, so the window is kept.
    let win = match window {
        Some(w) if cache.is_some() || w < dims.seq => to_i32(OP, "window", w)?,
        _ => 0,
    };
    let cap = to_i32(OP, "cap", cache.as_ref().map_or(0, |c| c.cap))?;
    let s = dev.stream();
    let (o_p, _g0) = out.device_ptr_mut(s);
    let (l_p, _g1) = match lse {
        Some(l) => {
            let (p, g) = l.ptr_mut(s);
            (p, Some(g))
        }
        None => (0u64, None),
    };
    let (q_p, _g2) = qkv.device_ptr(s);
    let ((k_p, _g3), (v_p, _g4), (p_p, _g5)) = match &cache {
        Some(c) => {
            let (k, gk) = c.k.ptr(s);
            let (v, gv) = c.v.ptr(s);
            let (p, gp) = c.pos.ptr(s);
            ((k, Some(gk)), (v, Some(gv)), (p, Some(gp)))
        }
        None => ((0u64, None), (0u64, None), (0u64, None)),
    };
    if mma {
        let smem = 2 * 2 * MMA_BK * (hd + 8) * std::mem::size_of::<u16>();
        let f = dev.function(
            &ATTENTION_MMA,
            &format!("attention_mma_fwd_bf16_hd{hd}"),
            smem,
        )?;
        let mut launch = s.launch_builder(&f);
        launch
            .arg(&o_p)
            .arg(&l_p)
            .arg(&q_p)
            .arg(&k_p)
            .arg(&v_p)
            .arg(&p_p)
            .arg(&seq)
            .arg(&heads)
            .arg(&kv_heads)
            .arg(&win)
            .arg(&cap);
        let cfg = LaunchConfig {
            grid_dim: (q_tiles, heads_u, batch_u),
            block_dim: (128, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        // SAFETY: arguments match attention_mma_fwd_bf16_hd<HD>(bf16*, float*, const bf16*,
        // const bf16*, const bf16*, const int*, int, int, int, int, int) with HD = head_dim (64
        // or 128, checked by use_tensor_cores, which also checked T is bf16); qkv, out, lse and
        // the ring hold the elements their shapes give (checked above); null lse / cache are
        // skipped by the kernel; the dynamic shared memory is its two double-buffered K and V
        // tiles, and the function's limit was raised to it.
        unsafe { launch.launch(cfg) }.map_err(driver("launching attention_mma_fwd"))?;
    } else {
        let smem = (BQ * hd + BK * (hd + 1) + BK * hd) * std::mem::size_of::<f32>();
        let f = dev.function(&ATTENTION, &entry::<T>(OP), smem)?;
        let mut launch = s.launch_builder(&f);
        launch
            .arg(&o_p)
            .arg(&l_p)
            .arg(&q_p)
            .arg(&k_p)
            .arg(&v_p)
            .arg(&p_p)
            .arg(&seq)
            .arg(&heads)
            .arg(&kv_heads)
            .arg(&head_dim)
            .arg(&win)
            .arg(&cap);
        let cfg = LaunchConfig {
            grid_dim: (q_tiles, heads_u, batch_u),
            block_dim: (128, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        // SAFETY: arguments match attention_fwd_<T>(T*, float*, const T*, const T*, const T*,
        // const int*, int, int, int, int, int, int); qkv, out, lse and the ring hold the
        // elements their shapes give (checked above); head_dim <= 256 as the kernel's registers
        // need; the dynamic shared memory is the kernel's Q, K and V tiles and the function's
        // limit was raised to it when above 48 KiB.
        unsafe { launch.launch(cfg) }.map_err(driver("launching attention_fwd"))?;
    }
    Ok(())
}

fn check_ring<T>(op: &'static str, c: &KvRing<'_, T>, dims: QkvDims) -> Result<()> {
    let ring = dims.batch * c.cap * dims.kv_heads * dims.head_dim;
    const SHAPE: &str = "[batch, cap, kv_heads * head_dim]";
    check_len(op, "k_cache", c.k.elems(), ring, SHAPE)?;
    check_len(op, "v_cache", c.v.elems(), ring, SHAPE)?;
    check_len(op, "pos", c.pos.elems(), dims.batch, "[batch]")
}

/// How the decoding kernel lays lanes over a key of `head_dim` values of T: (lanes per key,
/// values per lane), or None when it does not apply.
fn decode_lanes<T: Elem>(head_dim: usize) -> Option<(usize, usize)> {
    let vec = 16 / std::mem::size_of::<T>();
    if head_dim == 0 || head_dim % vec != 0 || head_dim > MAX_HEAD_DIM {
        return None;
    }
    let lanes = (head_dim / vec).min(32);
    let per_lane = head_dim / lanes;
    (lanes.is_power_of_two()
        && head_dim % lanes == 0
        && per_lane % vec == 0
        && per_lane <= DEC_MAX_DPL)
        .then_some((lanes, per_lane))
}

/// Whether [`attention_decode_fwd`] handles storage T with this head_dim (16-byte vectors of
/// one key spread over at most 32 lanes: e.g. bf16 with head_dim 8..=256 a power of two).
pub fn decode_applies<T: Elem>(head_dim: usize) -> bool {
    decode_lanes::<T>(head_dim).is_some()
}

/// Keys per split the decoding kernel aims at: enough blocks that the GPU streams the rings at
/// full bandwidth even for one sequence of a long context.
const DEC_KEYS_PER_SPLIT: usize = 256;

/// Splits of the keys per (sequence, head) for decoding steps of `batch` sequences whose rings
/// hold up to `max_keys` keys: blocks of about 256 keys, and at least enough blocks to fill the
/// GPU twice over (132 multiprocessors on the H200); at most 1024.
pub fn decode_splits(batch: usize, heads: usize, max_keys: usize) -> usize {
    let fill = 264usize.div_ceil((batch * heads).max(1));
    let keys = (max_keys + 1).div_ceil(DEC_KEYS_PER_SPLIT);
    fill.max(keys).clamp(1, 1024)
}

/// One decoding step: the new token of each sequence (`qkv` [batch, 1, qkv_dim], roped) attends
/// to its ring of earlier keys and itself, and its key and value are then stored in the ring
/// (slot `pos[b] % cap`, after every read of the ring). out [batch, 1, heads * head_dim];
/// `part` [batch, heads, n_split, head_dim + 2] f32 is scratch for the split partial results;
/// `done` [batch, kv_heads] counts finished blocks: zeros before the first call, and the kernel
/// leaves them zero. One kernel: the last block of each (sequence, kv group) merges the splits.
/// The CPU's `attention_cached_fwd` with seq = 1 followed by the cache push.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_fwd<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    part: &mut impl DevicePtrMut<f32>,
    done: &mut impl DevicePtrMut<u32>,
    qkv: &impl DevicePtr<T>,
    dims: QkvDims,
    window: Option<usize>,
    k_ring: &mut impl DevicePtrMut<T>,
    v_ring: &mut impl DevicePtrMut<T>,
    pos: &impl DevicePtr<i32>,
    cap: usize,
    n_split: usize,
) -> Result<()> {
    const OP: &str = "attention_decode_fwd";
    check_qkv_dims(OP, dims)?;
    if dims.seq != 1
        || window == Some(0)
        || n_split == 0
        || n_split > DEC_MAX_SPLITS
        || decode_lanes::<T>(dims.head_dim).is_none()
    {
        return Err(CudaError::Unsupported {
            op: OP,
            reason: format!(
                "one token per sequence (seq = {}), a window of at least 1 ({window:?}), 1 <= n_split <= {DEC_MAX_SPLITS} ({n_split}) and a head_dim of 16-byte vectors over at most 32 lanes ({} values of {})",
                dims.seq,
                dims.head_dim,
                T::SUFFIX
            ),
        });
    }
    if let Some(w) = window {
        if cap < w - 1 {
            return Err(CudaError::Unsupported {
                op: OP,
                reason: format!("a ring of {cap} positions cannot hold a window of {w}"),
            });
        }
    }
    let (b, h, hd) = (dims.batch, dims.heads, dims.head_dim);
    check_len(
        OP,
        "qkv",
        qkv.len(),
        b * dims.qkv_dim(),
        "[batch, 1, qkv_dim]",
    )?;
    check_len(
        OP,
        "out",
        out.len(),
        b * dims.out_dim(),
        "[batch, 1, heads * head_dim]",
    )?;
    check_len(
        OP,
        "part",
        part.len(),
        b * h * n_split * (hd + 2),
        "[batch, heads, n_split, head_dim + 2]",
    )?;
    let ring = b * cap * dims.kv_heads * hd;
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
    check_len(OP, "pos", pos.len(), b, "[batch]")?;
    check_len(
        OP,
        "done",
        done.len(),
        b * dims.kv_heads,
        "[batch, kv_heads]",
    )?;
    if b == 0 || h == 0 {
        return Ok(());
    }
    let grid_err = |what: &str| CudaError::Unsupported {
        op: OP,
        reason: format!("{what} is more than one grid dimension holds"),
    };
    let heads_u = u32::try_from(h)
        .ok()
        .filter(|&v| v <= 65535)
        .ok_or_else(|| grid_err("heads"))?;
    let batch_u = u32::try_from(b)
        .ok()
        .filter(|&v| v <= 65535)
        .ok_or_else(|| grid_err("batch"))?;
    let heads = h as i32;
    let kv_heads = to_i32(OP, "kv_heads", dims.kv_heads)?;
    let head_dim = hd as i32;
    let cap_i = to_i32(OP, "cap", cap)?;
    let win = match window {
        Some(w) => to_i32(OP, "window", w)?,
        None => 0,
    };
    let splits = to_i32(OP, "n_split", n_split)?;
    let s = dev.stream();
    let (o_p, _g0) = out.device_ptr_mut(s);
    let (part_p, _g1) = part.device_ptr_mut(s);
    let (done_p, _g2) = done.device_ptr_mut(s);
    let (q_p, _g3) = qkv.device_ptr(s);
    let (k_p, _g4) = k_ring.device_ptr_mut(s);
    let (v_p, _g5) = v_ring.device_ptr_mut(s);
    let (p_p, _g6) = pos.device_ptr(s);
    let f = dev.function(&ATTENTION_DECODE, &entry::<T>(OP), 0)?;
    let args = Args::new()
        .ptr(o_p)
        .ptr(part_p)
        .ptr(done_p)
        .ptr(q_p)
        .ptr(k_p)
        .ptr(v_p)
        .ptr(p_p)
        .i32(heads)
        .i32(kv_heads)
        .i32(head_dim)
        .i32(cap_i)
        .i32(win)
        .i32(splits);
    let cfg = LaunchConfig {
        grid_dim: (n_split as u32, heads_u, batch_u),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match attention_decode_fwd_<T>(T*, float*, unsigned*, const T*, T*, T*,
    // const int*, int x 6); every buffer holds what its shape needs (checked above); head_dim
    // spreads over at most 32 lanes of at most DEC_MAX_DPL values each (decode_lanes), within
    // the kernel's 256-value shared rows; n_split <= DEC_MAX_SPLITS (the merge's weights); the
    // ring holds every key the window can see (cap >= window - 1, or every position for full
    // attention: the state's promise); `done` is zero between calls (each group's last block
    // resets its counter).
    unsafe { pdl::launch(dev, &f, cfg, &args, OP) }
}
