//! RoPE forward on the GPU; the kernel is `rope_fwd` in kernels/rope.cu.

use cudarc::driver::{DevicePtrMut, PushKernelArg};
use samba_cpu::ops::attention::QkvDims;
use samba_cpu::ops::rope::RopeTable;

use super::{entry, grid_1d, StateIn};
use crate::compile::ROPE;
use crate::error::{check_len, driver, to_i32, Result};
use crate::{Buffer, CudaDevice, CudaError, Elem};

/// A RoPE table on the device: the same bf16-rounded cos and sin as the CPU's [`RopeTable`]
/// (built on the host once, then uploaded), both [len, head_dim / 2] in f32.
pub struct DeviceRopeTable {
    pub head_dim: usize,
    pub start: usize,
    pub len: usize,
    cos: Buffer<f32>,
    sin: Buffer<f32>,
}

impl DeviceRopeTable {
    pub fn upload(dev: &CudaDevice, table: &RopeTable) -> Result<DeviceRopeTable> {
        Ok(DeviceRopeTable {
            head_dim: table.head_dim,
            start: table.start,
            len: table.len,
            cos: dev.upload(table.cos())?,
            sin: dev.upload(table.sin())?,
        })
    }

    /// cos [len, head_dim / 2]
    pub(crate) fn cos(&self) -> &Buffer<f32> {
        &self.cos
    }

    /// sin [len, head_dim / 2]
    pub(crate) fn sin(&self) -> &Buffer<f32> {
        &self.sin
    }
}

/// Checks a QkvDims the way the kernels need it: a positive multiple of kv heads, even head dim.
pub(crate) fn check_qkv_dims(op: &'static str, dims: QkvDims) -> Result<()> {
    if dims.head_dim == 0 || dims.kv_heads == 0 || dims.heads % dims.kv_heads != 0 {
        return Err(CudaError::Unsupported {
            op,
            reason: format!(
                "heads ({}) must be a positive multiple of kv_heads ({}) and head_dim ({}) positive",
                dims.heads, dims.kv_heads, dims.head_dim
            ),
        });
    }
    Ok(())
}

/// Rotates every q and k head (not v) of `qkv` [batch, seq, qkv_dim] in place; token t of each
/// sequence is at absolute position `table.start + t`.
pub fn rope_fwd<T: Elem>(
    dev: &CudaDevice,
    qkv: &mut impl DevicePtrMut<T>,
    table: &DeviceRopeTable,
    dims: QkvDims,
) -> Result<()> {
    const OP: &str = "rope_fwd";
    check_qkv_dims(OP, dims)?;
    if dims.head_dim % 2 != 0 || table.head_dim != dims.head_dim || dims.seq > table.len {
        return Err(CudaError::Unsupported {
            op: OP,
            reason: format!(
                "the table (head_dim {}, {} positions) does not fit head_dim {} and seq {}",
                table.head_dim, table.len, dims.head_dim, dims.seq
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
    if tokens == 0 {
        return Ok(());
    }
    let f = dev.function(&ROPE, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (q_p, _g0) = qkv.device_ptr_mut(s);
    let (tokens_l, seq) = (tokens as i64, to_i32(OP, "seq", dims.seq)?);
    let (heads, kv_heads) = (
        to_i32(OP, "heads", dims.heads)?,
        to_i32(OP, "kv_heads", dims.kv_heads)?,
    );
    let head_dim = to_i32(OP, "head_dim", dims.head_dim)?;
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&q_p)
        .arg(&table.cos)
        .arg(&table.sin)
        .arg(&tokens_l)
        .arg(&seq)
        .arg(&heads)
        .arg(&kv_heads)
        .arg(&head_dim);
    let n = tokens * (dims.heads + dims.kv_heads) * dims.head_dim / 2;
    // SAFETY: arguments match rope_fwd_<T>(T*, const float*, const float*, long, int, int, int,
    // int); qkv holds batch * seq * qkv_dim elements and the tables len * head_dim / 2 with
    // seq <= len (checked above).
    unsafe { launch.launch(grid_1d(n)) }.map_err(driver("launching rope_fwd"))?;
    Ok(())
}

/// An even head_dim, and a table of that head_dim from position 0 covering `max_position`: what
/// the kernels that rotate at positions read from the device (`rope_pos_fwd`, `gemv_rope_fwd`)
/// need.
pub(crate) fn check_table(
    op: &'static str,
    table: &DeviceRopeTable,
    head_dim: usize,
    max_position: usize,
) -> Result<()> {
    if head_dim % 2 != 0
        || table.head_dim != head_dim
        || table.start != 0
        || max_position >= table.len
    {
        return Err(CudaError::Unsupported {
            op,
            reason: format!(
                "the table (head_dim {}, positions {}..{}) does not fit head_dim {head_dim} and position {max_position}",
                table.head_dim,
                table.start,
                table.start + table.len,
            ),
        });
    }
    Ok(())
}

/// [`rope_fwd`] at positions held on the device: token t of sequence b is at absolute position
/// `pos0[b] + t` (`pos0` None: t), a row of `table`, which must start at position 0 and cover
/// `max_position` (the largest position used, which the caller knows from its host copy of the
/// positions). A captured decoding step rotates at the right positions with no host input.
pub fn rope_pos_fwd<T: Elem>(
    dev: &CudaDevice,
    qkv: &mut impl DevicePtrMut<T>,
    table: &DeviceRopeTable,
    pos0: Option<&dyn StateIn<i32>>,
    max_position: usize,
    dims: QkvDims,
) -> Result<()> {
    const OP: &str = "rope_pos_fwd";
    check_qkv_dims(OP, dims)?;
    check_table(OP, table, dims.head_dim, max_position)?;
    if let Some(p) = &pos0 {
        check_len(OP, "pos0", p.elems(), dims.batch, "[batch]")?;
    }
    let tokens = dims.batch * dims.seq;
    check_len(
        OP,
        "qkv",
        qkv.len(),
        tokens * dims.qkv_dim(),
        "[batch, seq, (heads + 2 kv_heads) head_dim]",
    )?;
    if tokens == 0 {
        return Ok(());
    }
    let f = dev.function(&ROPE, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (q_p, _g0) = qkv.device_ptr_mut(s);
    let (p_p, _g1) = match pos0 {
        Some(p) => {
            let (ptr, g) = p.ptr(s);
            (ptr, Some(g))
        }
        None => (0u64, None),
    };
    let (tokens_l, seq) = (tokens as i64, to_i32(OP, "seq", dims.seq)?);
    let (heads, kv_heads) = (
        to_i32(OP, "heads", dims.heads)?,
        to_i32(OP, "kv_heads", dims.kv_heads)?,
    );
    let head_dim = to_i32(OP, "head_dim", dims.head_dim)?;
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&q_p)
        .arg(&table.cos)
        .arg(&table.sin)
        .arg(&p_p)
        .arg(&tokens_l)
        .arg(&seq)
        .arg(&heads)
        .arg(&kv_heads)
        .arg(&head_dim);
    let n = tokens * (dims.heads + dims.kv_heads) * dims.head_dim / 2;
    // SAFETY: arguments match rope_pos_fwd_<T>(T*, const float*, const float*, const int*, long,
    // int, int, int, int); qkv holds batch * seq * qkv_dim elements, pos0 batch (checked), and
    // every position pos0[b] + t is at most max_position < table.len (the caller's promise,
    // from the host copy of the positions the device ones mirror).
    unsafe { launch.launch(grid_1d(n)) }.map_err(driver("launching rope_pos_fwd"))?;
    Ok(())
}
