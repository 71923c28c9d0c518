//! The Mamba-1 mixer sublayer on the GPU (shared/SPEC.md section 1), for xn = RMSNorm(x)
//! [rows, d] in `acts.normed`, its output added into the residual stream `acts.x`:
//!
//!   xz      = xn @ in_proj^T                      [rows, 2E] = [x_in | z]   (one GEMM)
//!   u       = silu(causal_conv1d(x_in) + bias)   [rows, E]    (x_in read in place, stride 2E)
//!   x_dbl   = u @ x_proj^T                        [rows, R + 2N] = [dt_low | B | C]
//!   delta   = dt_low @ dt_proj^T                  [rows, E]    (dt_low read in place)
//!   y       = selective_scan(u, delta, A, B, C, D, z)          (B, C, z read in place)
//!   x      += y @ out_proj^T                      [rows, d]  (into the f32 residual stream)
//!
//! With a state: the conv reads the conv state as the inputs before the chunk and leaves the
//! last d_conv - 1 inputs there; the scan starts from the SSM state and leaves h there.

use samba_cpu::ops::causal_conv::ConvDims;
use samba_cpu::ops::matmul::LinearDims;
use samba_cpu::ops::selective_scan::ScanDims;
use samba_model::layout::MambaParams;

use super::plan::CudaActivations;
use super::state::{LayerRef, LayerState};
use super::CudaModel;
use crate::error::{driver, CudaError, Result};
use crate::ops::causal_conv::{causal_conv1d_silu_fwd_strided, causal_conv1d_update_fwd};
use crate::ops::matmul::{linear_fwd_into_f32, linear_fwd_strided};
use crate::ops::selective_scan::{selective_scan_fwd_with_state, ScanBuffers, ScanStrides};
use crate::ops::StateOut;
use crate::Elem;

/// Chunks up to this many tokens update the conv state in place, one thread per channel walking
/// the chunk (decoding); longer ones run the parallel conv and copy the new state over.
const CONV_UPDATE_MAX_SEQ: usize = 16;

pub(super) fn forward<T: Elem>(
    model: &CudaModel<T>,
    acts: &mut CudaActivations<T>,
    p: &MambaParams,
    layer: Option<LayerRef<'_, T>>,
) -> Result<()> {
    let c = &model.config;
    let dev = &**model.device();
    let shape = acts.shape;
    let rows = shape.rows();
    let (d, e, n, r) = (c.d_model, c.d_inner(), c.d_state, c.dt_rank);
    let xdim = r + 2 * n;
    let lin = |in_features, out_features| LinearDims {
        rows,
        in_features,
        out_features,
    };
    let conv = ConvDims {
        batch: shape.batch,
        seq: shape.seq,
        channels: e,
        kernel: c.d_conv,
    };
    let scan = ScanDims {
        batch: shape.batch,
        seq: shape.seq,
        d_inner: e,
        d_state: n,
    };
    let CudaActivations {
        x, normed, mamba, ..
    } = acts;
    let m = mamba.as_mut().ok_or_else(|| missing("Mamba"))?;
    let state = match layer {
        Some(LayerRef {
            layer: LayerState::Mamba { conv, ssm },
            ..
        }) => Some((conv, ssm)),
        Some(_) => return Err(missing("a Mamba state")),
        None => None,
    };

    // xz = xn @ in_proj^T
    linear_fwd_strided(
        dev,
        &mut m.xz,
        2 * e,
        &*normed,
        d,
        &model.tensor(p.in_proj),
        lin(d, 2 * e),
    )?;
    // u = silu(conv(x_in) + bias)
    let (conv_w, conv_b) = (model.tensor(p.conv_w), model.tensor(p.conv_b));
    let state_len = conv.state_len();
    let (ssm_state, conv_state) = match state {
        Some((conv_state, ssm)) => (Some(ssm), Some(conv_state)),
        None => (None, None),
    };
    match conv_state {
        None => causal_conv1d_silu_fwd_strided(
            dev,
            &mut m.u,
            &m.xz,
            2 * e,
            &conv_w,
            &conv_b,
            conv,
            None,
            None,
        )?,
        Some(cs) if shape.seq <= CONV_UPDATE_MAX_SEQ => {
            let mut cs = cs.slice_mut(0..state_len);
            causal_conv1d_update_fwd(dev, &mut m.u, &mut cs, &m.xz, 2 * e, &conv_w, &conv_b, conv)?
        }
        Some(cs) => {
            {
                let before = cs.slice(0..state_len);
                let mut after = m.conv_tmp.slice_mut(0..state_len);
                causal_conv1d_silu_fwd_strided(
                    dev,
                    &mut m.u,
                    &m.xz,
                    2 * e,
                    &conv_w,
                    &conv_b,
                    conv,
                    Some(&before),
                    Some(&mut after),
                )?;
            }
            let after = m.conv_tmp.slice(0..state_len);
            let mut dst = cs.slice_mut(0..state_len);
            dev.stream()
                .memcpy_dtod(&after, &mut dst)
                .map_err(driver("copying the conv state"))?;
        }
    }
    // x_dbl = u @ x_proj^T = [dt_low | B | C]
    linear_fwd_strided(
        dev,
        &mut m.x_dbl,
        xdim,
        &m.u,
        e,
        &model.tensor(p.x_proj),
        lin(e, xdim),
    )?;
    // delta = dt_low @ dt_proj^T
    linear_fwd_strided(
        dev,
        &mut m.delta,
        e,
        &m.x_dbl,
        xdim,
        &model.tensor(p.dt_proj_w),
        lin(r, e),
    )?;
    // y = scan(u, delta, A, B, C, D) * silu(z)
    {
        let inputs = ScanBuffers {
            u: m.u.as_view(),
            delta_raw: m.delta.as_view(),
            delta_bias: model.tensor(p.dt_proj_b),
            a_log: model.tensor(p.a_log),
            b: m.x_dbl.slice(r..),
            c: m.x_dbl.slice(r + n..),
            d_skip: model.tensor(p.d_skip),
            z: m.xz.slice(e..),
        };
        let strides = ScanStrides { z: 2 * e, bc: xdim };
        let mut ssm_view = ssm_state.map(|s| s.slice_mut(0..scan.state_len()));
        selective_scan_fwd_with_state(
            dev,
            &mut m.y,
            &inputs,
            scan,
            strides,
            ssm_view.as_mut().map(|v| v as &mut dyn StateOut<f32>),
        )?;
    }
    // x += y @ out_proj^T
    linear_fwd_into_f32(
        dev,
        x,
        d,
        &m.y,
        e,
        &model.tensor(p.out_proj),
        lin(e, d),
        true,
    )
}

fn missing(what: &str) -> CudaError {
    CudaError::Unsupported {
        op: "CudaModel::forward",
        reason: format!(
            "{what} buffer missing from the activations or state (built for another model?)"
        ),
    }
}
