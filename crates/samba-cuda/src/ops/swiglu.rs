//! SwiGLU forward on the GPU; the kernel is `swiglu_fwd` in kernels/swiglu.cu.

use cudarc::driver::{DevicePtr, DevicePtrMut, PushKernelArg};

use super::{entry, grid_1d};
use crate::compile::SWIGLU;
use crate::error::{check_len, driver, Result};
use crate::{CudaDevice, Elem};

/// act = silu(gate) * up, elementwise; act, gate, up [rows, hidden].
pub fn swiglu_fwd<T: Elem>(
    dev: &CudaDevice,
    act: &mut impl DevicePtrMut<T>,
    gate: &impl DevicePtr<T>,
    up: &impl DevicePtr<T>,
) -> Result<()> {
    const OP: &str = "swiglu_fwd";
    let n = act.len();
    check_len(OP, "gate", gate.len(), n, "[rows, hidden], as act")?;
    check_len(OP, "up", up.len(), n, "[rows, hidden], as act")?;
    if n == 0 {
        return Ok(());
    }
    let f = dev.function(&SWIGLU, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (a_p, _g0) = act.device_ptr_mut(s);
    let (g_p, _g1) = gate.device_ptr(s);
    let (u_p, _g2) = up.device_ptr(s);
    let n_i = n as i64;
    let mut launch = s.launch_builder(&f);
    launch.arg(&a_p).arg(&g_p).arg(&u_p).arg(&n_i);
    // SAFETY: arguments match swiglu_fwd_<T>(T*, const T*, const T*, long); all three buffers
    // hold n elements (checked above); the kernel's grid-stride loop stays below n.
    unsafe { launch.launch(grid_1d(n)) }.map_err(driver("launching swiglu_fwd"))?;
    Ok(())
}

/// act [rows, hidden] = silu(gate) * up from the fused [rows, 2 hidden] output `gu` = [gate | up]
/// of one GEMM with the stacked weights [w1; w2].
pub fn swiglu_fused_fwd<T: Elem>(
    dev: &CudaDevice,
    act: &mut impl DevicePtrMut<T>,
    gu: &impl DevicePtr<T>,
    hidden: usize,
) -> Result<()> {
    const OP: &str = "swiglu_fused_fwd";
    if hidden == 0 {
        return Ok(());
    }
    let n = act.len();
    let rows = n / hidden;
    check_len(OP, "act", n, rows * hidden, "[rows, hidden]")?;
    check_len(OP, "gu", gu.len(), 2 * n, "[rows, 2 hidden] = [gate | up]")?;
    if n == 0 {
        return Ok(());
    }
    let hidden_i = crate::error::to_i32(OP, "hidden", hidden)?;
    let f = dev.function(&SWIGLU, &entry::<T>(OP), 0)?;
    let s = dev.stream();
    let (a_p, _g0) = act.device_ptr_mut(s);
    let (g_p, _g1) = gu.device_ptr(s);
    let rows_l = rows as i64;
    let mut launch = s.launch_builder(&f);
    launch.arg(&a_p).arg(&g_p).arg(&rows_l).arg(&hidden_i);
    // SAFETY: arguments match swiglu_fused_fwd_<T>(T*, const T*, long, int); act holds
    // rows * hidden elements and gu 2 * rows * hidden (checked above).
    unsafe { launch.launch(grid_1d(n)) }.map_err(driver("launching swiglu_fused_fwd"))?;
    Ok(())
}
