//! RMSNorm forward on the GPU; the kernel is `rmsnorm_fwd` in kernels/rmsnorm.cu.

use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::entry;
use crate::compile::RMSNORM;
use crate::error::{check_len, driver, Result};
use crate::{CudaDevice, Elem};

/// out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), per row.
/// out, x [rows, dim]; w [dim]; rstd [rows] (f32, saved for backward).
pub fn rmsnorm_fwd<T: Elem>(
    dev: &CudaDevice,
    out: &mut impl DevicePtrMut<T>,
    rstd: &mut impl DevicePtrMut<f32>,
    x: &impl DevicePtr<T>,
    w: &impl DevicePtr<T>,
    eps: f32,
) -> Result<()> {
    const OP: &str = "rmsnorm_fwd";
    let dim = w.len();
    let rows = rstd.len();
    check_len(
        OP,
        "x",
        x.len(),
        rows * dim,
        "[rows, dim] with rows = rstd.len(), dim = w.len()",
    )?;
    check_len(OP, "out", out.len(), x.len(), "[rows, dim]")?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let dim_i = crate::error::to_i32(OP, "dim", dim)?;
    let rows_u = u32::try_from(rows).map_err(|_| crate::CudaError::Unsupported {
        op: OP,
        reason: format!("{rows} rows is more than one grid holds"),
    })?;
    let f = dev.function(&RMSNORM, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (out_p, _g0) = out.device_ptr_mut(s);
    let (rstd_p, _g1) = rstd.device_ptr_mut(s);
    let (x_p, _g2) = x.device_ptr(s);
    let (w_p, _g3) = w.device_ptr(s);
    let threads = if dim >= 1024 { 512 } else { 128 };
    let cfg = LaunchConfig {
        grid_dim: (rows_u, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&out_p)
        .arg(&rstd_p)
        .arg(&x_p)
        .arg(&w_p)
        .arg(&dim_i)
        .arg(&eps);
    // SAFETY: the argument list matches rmsnorm_fwd_<T>(T*, float*, const T*, const T*, int,
    // float); out and x hold rows * dim elements, w dim, rstd rows (checked above); one block
    // per row.
    unsafe { launch.launch(cfg) }.map_err(driver("launching rmsnorm_fwd"))?;
    Ok(())
}
