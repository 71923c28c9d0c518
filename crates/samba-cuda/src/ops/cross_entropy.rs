//! Cross-entropy / log-softmax forward on the GPU; the kernel is `cross_entropy_fwd` in
//! kernels/cross_entropy.cu.

use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::entry;
use crate::compile::CROSS_ENTROPY;
use crate::error::{check_len, driver, to_i32, Result};
use crate::{CudaDevice, CudaError, Elem};

/// loss[m] = lse[m] - logits[m, targets[m]], lse[m] = logsumexp(logits[m, :]).
/// logits [rows, vocab]; targets [rows]; loss, lse [rows] (f32). log p(v) = logits[m, v] - lse[m].
pub fn cross_entropy_fwd<T: Elem>(
    dev: &CudaDevice,
    loss: &mut impl DevicePtrMut<f32>,
    lse: &mut impl DevicePtrMut<f32>,
    logits: &impl DevicePtr<T>,
    targets: &impl DevicePtr<u32>,
    vocab: usize,
) -> Result<()> {
    const OP: &str = "cross_entropy_fwd";
    let rows = targets.len();
    check_len(
        OP,
        "logits",
        logits.len(),
        rows * vocab,
        "[rows, vocab] with rows = targets.len()",
    )?;
    check_len(OP, "loss", loss.len(), rows, "[rows]")?;
    check_len(OP, "lse", lse.len(), rows, "[rows]")?;
    if rows == 0 {
        return Ok(());
    }
    let vocab_i = to_i32(OP, "vocab", vocab)?;
    let rows_u = u32::try_from(rows).map_err(|_| CudaError::Unsupported {
        op: OP,
        reason: format!("{rows} rows is more than one grid holds"),
    })?;
    let f = dev.function(&CROSS_ENTROPY, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (l_p, _g0) = loss.device_ptr_mut(s);
    let (z_p, _g1) = lse.device_ptr_mut(s);
    let (x_p, _g2) = logits.device_ptr(s);
    let (t_p, _g3) = targets.device_ptr(s);
    let mut launch = s.launch_builder(&f);
    launch.arg(&l_p).arg(&z_p).arg(&x_p).arg(&t_p).arg(&vocab_i);
    let cfg = LaunchConfig {
        grid_dim: (rows_u, 1, 1),
        block_dim: (512, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match cross_entropy_fwd_<T>(float*, float*, const T*, const u32*, int);
    // logits holds rows * vocab elements, the others rows (checked above); one block per row.
    unsafe { launch.launch(cfg) }.map_err(driver("launching cross_entropy_fwd"))?;
    Ok(())
}
