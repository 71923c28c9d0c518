//! Embedding lookup on the GPU; the kernel is `embedding_fwd` in kernels/embedding.cu.

use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};

use super::{entry, grid_1d};
use crate::compile::EMBEDDING;
use crate::error::{check_len, driver, to_i32, Result};
use crate::{CudaDevice, Elem};

/// out[m, :] = wte[tokens[m], :]. out [rows, dim]; tokens [rows]; wte [vocab, dim]. Token ids
/// are checked on the host by the caller (user input); an id outside the vocabulary yields a
/// NaN row, never an out-of-bounds read.
pub fn embedding_fwd<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    tokens: &impl DevicePtr<u32>,
    wte: &impl DevicePtr<T>,
    dim: usize,
) -> Result<()> {
    const OP: &str = "embedding_fwd";
    let rows = tokens.len();
    check_len(
        OP,
        "out",
        out.len(),
        rows * dim,
        "[rows, dim] with rows = tokens.len()",
    )?;
    if dim == 0 || wte.len() % dim != 0 {
        return Err(crate::CudaError::Unsupported {
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
    let f = dev.function(&EMBEDDING, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (o_p, _g0) = out.device_ptr_mut(s);
    let (t_p, _g1) = tokens.device_ptr(s);
    let (w_p, _g2) = wte.device_ptr(s);
    let rows_i = rows as i64;
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&o_p)
        .arg(&t_p)
        .arg(&w_p)
        .arg(&rows_i)
        .arg(&dim_i)
        .arg(&vocab);
    // SAFETY: arguments match embedding_fwd_<T>(T*, const u32*, const T*, long, int, int);
    // out holds rows * dim, tokens rows, wte vocab * dim elements; ids >= vocab are not read.
    unsafe { launch.launch(grid_1d(rows * dim)) }.map_err(driver("launching embedding_fwd"))?;
    Ok(())
}
