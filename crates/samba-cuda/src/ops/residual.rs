//! The f32 residual stream: the embedding written into it, and each sublayer's residual add
//! fused with the next RMSNorm; the kernels are in kernels/residual.cu.

use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::entry;
use super::pdl::{self, Args};
use crate::compile::RESIDUAL;
use crate::error::{check_len, driver, to_i32, Result};
use crate::{CudaDevice, CudaError, Elem};

/// x [rows, dim] (f32) = wte[tokens[m], :], wte [vocab, dim] in T. Token ids are checked on the
/// host by the caller; an id outside the vocabulary yields a NaN row, never an out-of-bounds read.
pub fn embedding_residual_fwd<T: Elem>(
    dev: &CudaDevice,
    x: &mut impl DevicePtrMut<f32>,
    tokens: &impl DevicePtr<u32>,
    wte: &impl DevicePtr<T>,
    dim: usize,
) -> Result<()> {
    const OP: &str = "embedding_residual_fwd";
    let rows = tokens.len();
    check_len(OP, "x", x.len(), rows * dim, "[rows, dim]")?;
    if dim == 0 || wte.len() % dim != 0 {
        return Err(CudaError::Unsupported {
            op: OP,
            reason: format!(
                "wte holds {} elements, not a multiple of dim = {dim}",
                wte.len()
            ),
        });
    }
    if rows == 0 {
        return Ok(());
    }
    let vocab = to_i32(OP, "vocab", wte.len() / dim)?;
    let dim_i = to_i32(OP, "dim", dim)?;
    let f = dev.function(&RESIDUAL, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (x_p, _g0) = x.device_ptr_mut(s);
    let (t_p, _g1) = tokens.device_ptr(s);
    let (w_p, _g2) = wte.device_ptr(s);
    let args = Args::new()
        .ptr(x_p)
        .ptr(t_p)
        .ptr(w_p)
        .u64(rows as u64)
        .i32(dim_i)
        .i32(vocab);
    // 128 threads a block, as the persistent step runs every block (a grid-stride loop).
    let cfg = LaunchConfig {
        grid_dim: ((rows * dim).div_ceil(128).clamp(1, 1 << 16) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match embedding_residual_fwd_<T>(float*, const u32*, const T*, long,
    // int, int); x holds rows * dim, tokens rows, wte vocab * dim elements; ids >= vocab are not
    // read; the kernel waits (pdl_wait) before it writes.
    unsafe { pdl::launch(dev, &f, cfg, &args, OP) }
}

/// Which rows of the residual stream a norm reads: every row, or the last token of each
/// sequence (the only logits a prefill needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    All,
    /// Row seq - 1 of each of the batch's sequences of `seq` tokens.
    LastOfEach {
        seq: usize,
    },
}

/// For each selected row of x [rows, dim] (f32): x += branch (when given: the previous
/// sublayer's output, T), then normed[r] = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps).
/// normed [selected rows, dim] (T); w [dim] (T). With [`Rows::LastOfEach`] the other rows of x
/// are left without the branch: use it only where x is not read again.
pub fn residual_rmsnorm_fwd<T: Elem>(
    dev: &CudaDevice,
    x: &mut impl DevicePtrMut<f32>,
    normed: &mut impl DevicePtrMut<T>,
    branch: Option<&dyn super::StateIn<T>>,
    w: &impl DevicePtr<T>,
    rows: Rows,
    eps: f32,
) -> Result<()> {
    const OP: &str = "residual_rmsnorm_fwd";
    let dim = w.len();
    if dim == 0 {
        return Ok(());
    }
    let total = x.len() / dim;
    check_len(
        OP,
        "x",
        x.len(),
        total * dim,
        "[rows, dim] with dim = w.len()",
    )?;
    if let Some(b) = &branch {
        check_len(OP, "branch", b.elems(), x.len(), "[rows, dim], as x")?;
    }
    let (out_rows, step, offset) = match rows {
        Rows::All => (total, 1, 0),
        Rows::LastOfEach { seq } => {
            if seq == 0 || total % seq != 0 {
                return Err(CudaError::Unsupported {
                    op: OP,
                    reason: format!("{total} rows are not whole sequences of {seq} tokens"),
                });
            }
            (total / seq, seq, seq - 1)
        }
    };
    check_len(
        OP,
        "normed",
        normed.len(),
        out_rows * dim,
        "[selected rows, dim]",
    )?;
    if out_rows == 0 {
        return Ok(());
    }
    let rows_u = u32::try_from(out_rows).map_err(|_| CudaError::Unsupported {
        op: OP,
        reason: format!("{out_rows} rows is more than one grid holds"),
    })?;
    let dim_i = to_i32(OP, "dim", dim)?;
    let step_i = to_i32(OP, "seq", step)?;
    let offset_i = offset as i32;
    let f = dev.function(&RESIDUAL, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (x_p, _g0) = x.device_ptr_mut(s);
    let (n_p, _g1) = normed.device_ptr_mut(s);
    let (b_p, _g2) = match branch {
        Some(b) => {
            let (p, g) = b.ptr(s);
            (p, Some(g))
        }
        None => (0u64, None),
    };
    let (w_p, _g3) = w.device_ptr(s);
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&x_p)
        .arg(&n_p)
        .arg(&b_p)
        .arg(&w_p)
        .arg(&dim_i)
        .arg(&step_i)
        .arg(&offset_i)
        .arg(&eps);
    let threads = if dim >= 1024 { 512 } else { 128 };
    let cfg = LaunchConfig {
        grid_dim: (rows_u, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match residual_rmsnorm_fwd_<T>(float*, T*, const T*, const T*, int, int,
    // int, float); block r reads row r * step + offset < total of x (and branch, same length) and
    // writes row r < out_rows of normed (lengths checked above).
    unsafe { launch.launch(cfg) }.map_err(driver("launching residual_rmsnorm_fwd"))?;
    Ok(())
}
