//! The SwiGLU MLP sublayer on the GPU, for xn = RMSNorm(x) [rows, d] in `acts.normed`:
//!
//!   [gate | up] = xn @ [w1; w2]^T      [rows, 2 hidden]   (one GEMM: w2 follows w1 in the buffer)
//!   act         = silu(gate) * up      [rows, hidden]
//!   x          += act @ w3^T           [rows, d]   (into the f32 residual stream)

use samba_cpu::ops::matmul::LinearDims;
use samba_model::layout::MlpParams;

use super::plan::CudaActivations;
use super::CudaModel;
use crate::error::{CudaError, Result};
use crate::ops::matmul::{linear_fwd_into_f32, linear_fwd_strided};
use crate::ops::swiglu::swiglu_fused_fwd;
use crate::Elem;

pub(super) fn forward<T: Elem>(
    model: &CudaModel<T>,
    acts: &mut CudaActivations<T>,
    p: &MlpParams,
) -> Result<()> {
    let c = &model.config;
    let dev = &**model.device();
    let rows = acts.shape.rows();
    let (d, hidden) = (c.d_model, p.hidden);
    let CudaActivations { x, normed, mlp, .. } = acts;
    let m = mlp.as_mut().ok_or_else(|| CudaError::Unsupported {
        op: "CudaModel::forward",
        reason: "MLP buffers missing from the activations (built for another model?)".into(),
    })?;
    let mut gate_up = m.gate_up.slice_mut(0..rows * 2 * hidden);
    let mut act = m.act.slice_mut(0..rows * hidden);
    // [gate | up] = xn @ [w1; w2]^T
    linear_fwd_strided(
        dev,
        &mut gate_up,
        2 * hidden,
        &*normed,
        d,
        &model.span(p.w1, 2 * hidden * d),
        LinearDims {
            rows,
            in_features: d,
            out_features: 2 * hidden,
        },
    )?;
    // act = silu(gate) * up
    swiglu_fused_fwd(dev, &mut act, &gate_up, hidden)?;
    // x += act @ w3^T
    linear_fwd_into_f32(
        dev,
        x,
        d,
        &act,
        hidden,
        &model.tensor(p.w3),
        LinearDims {
            rows,
            in_features: hidden,
            out_features: d,
        },
        true,
    )
}
