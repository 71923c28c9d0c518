//! The decoding step's sublayers with their kernels fused (one token per sequence, at most 4
//! sequences, with a state; `DecodeKernels::Fused`, `SAMBA_DECODE=fused`): each sublayer's
//! RMSNorm runs in the prologue of its first dense layer and the elementwise work between dense
//! layers in their epilogues (kernels/gemv.cu), so Samba-1.3B's step is 102 kernels instead of
//! ~230:
//!
//!   Mamba      [u, z] = conv step(RMSNorm(x) @ in_proj^T)   gemv_conv_fwd (conv state in place)
//!              x_dbl  = u @ x_proj^T                         gemv_fwd
//!              y      = scan step(x_dbl, u, z)               mamba_scan_step_fwd (dt_proj inside,
//!                                                            SSM state in place)
//!              x     += y @ out_proj^T                       gemv_fwd (into the f32 stream)
//!   attention  qkv    = rope(RMSNorm(x) @ attn^T)            gemv_rope_fwd
//!              att    = attention(qkv, ring)                 attention_decode_fwd (the split
//!                                                            merge and ring store inside)
//!              x     += att @ proj^T                         gemv_fwd
//!   MLP        act    = swiglu(RMSNorm(x) @ [w1; w2]^T)      gemv_swiglu_fwd
//!              x     += act @ w3^T                           gemv_fwd
//!   head       logits = RMSNorm_f(x) @ E^T                   gemv_fwd
//!
//! A sublayer these kernels do not cover (d_state not a power of two up to 32, more than 4
//! conv taps, a head size the decoding attention does not take) runs its norm and the unfused
//! sublayer. `SAMBA_FUSED_NORM=0` runs the norms as kernels of their own (for comparison).
//!
//! Not the default: every kernel here matches the unfused path (tests/parity_decode.rs, and
//! tests/model.rs run with this path on), but the GEMV kernel streams cold weights slower than
//! cuBLAS and each kernel keeps a fixed cost of ~4-5 us, so the fused step is slower than the
//! unfused one on cuBLAS (docs/gpu.md, "Fused decoding kernels": what it measured, and what
//! remains).

use cudarc::driver::CudaView;
use samba_cpu::ops::attention::QkvDims;
use samba_cpu::ops::causal_conv::ConvDims;
use samba_cpu::ops::matmul::LinearDims;
use samba_cpu::ops::selective_scan::ScanDims;
use samba_model::layout::{AttentionParams, MambaParams, MixerParams, MlpParams, SublayerParams};

use super::decode::DecodeKernels;
use super::plan::CudaActivations;
use super::state::{LayerRef, LayerState};
use super::{attention, mamba, mlp, CudaModel};
use crate::error::{CudaError, Result};
use crate::ops::attention::{attention_decode_fwd, decode_applies};
use crate::ops::gemv::{
    gemv_applies, gemv_conv_fwd, gemv_fwd, gemv_rope_fwd, gemv_swiglu_fwd, GemvInput, GemvOut,
    GEMV_CONV_MAX_K,
};
use crate::ops::mamba_decode::{mamba_scan_step_fwd, scan_step_applies, ScanStepInputs};
use crate::ops::residual::{residual_rmsnorm_fwd, Rows};
use crate::ops::StateIn;
use crate::{Buffer, CudaDevice, Elem};

/// Whether a forward of `acts` with a state runs the fused sublayers: chosen for these
/// activations ([`DecodeKernels::Fused`], `Persistent`, or `Auto` at batch 1 while its
/// persistent step records), one token per sequence, and every
/// dense layer's input rows fit the GEMV kernels. Fused alone is not the default: on the H200 the
/// fused step took 1.59 ms against 1.36 ms for the unfused one on cuBLAS (docs/gpu.md, "Fused
/// decoding kernels").
pub(super) fn applies<T: Elem>(model: &CudaModel<T>, acts: &CudaActivations<T>) -> bool {
    acts.shape.seq == 1
        && gemv_applies::<T>(acts.shape.rows(), widest_input(&model.config))
        && acts.step_kernels() != DecodeKernels::Unfused
}

/// The longest input row of the step's dense layers (what the GEMV kernels stage).
pub(super) fn widest_input(c: &samba_model::Config) -> usize {
    [
        c.d_model,
        c.d_inner(),
        c.heads * c.head_dim,
        c.mlp_hidden.max(2 * c.d_model),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// x += sublayer(RMSNorm(x)) for one sublayer, fused where its kernels apply.
pub(super) fn sublayer<T: Elem>(
    model: &CudaModel<T>,
    acts: &mut CudaActivations<T>,
    sub: &SublayerParams,
    layer: LayerRef<'_, T>,
) -> Result<()> {
    let c = &model.config;
    let norm = model.tensor(sub.norm);
    match sub.mixer {
        MixerParams::Mamba(p) if scan_step_applies(c.d_state) && c.d_conv <= GEMV_CONV_MAX_K => {
            return fused_mamba(model, acts, &p, &norm, layer)
        }
        MixerParams::WindowAttention(p) if decode_applies::<T>(c.head_dim) => {
            return fused_attention(model, acts, &p, Some(c.window), &norm, layer)
        }
        MixerParams::FullAttention(p) if decode_applies::<T>(c.head_dim) => {
            return fused_attention(model, acts, &p, None, &norm, layer)
        }
        MixerParams::Mlp(p) => return fused_mlp(model, acts, &p, &norm),
        _ => {}
    }
    // Not covered: the norm, then the unfused sublayer.
    let dev = &**model.device();
    residual_rmsnorm_fwd(
        dev,
        &mut acts.x,
        &mut acts.normed,
        None,
        &norm,
        Rows::All,
        c.norm_eps,
    )?;
    match sub.mixer {
        MixerParams::Mamba(p) => mamba::forward(model, acts, &p, Some(layer)),
        MixerParams::WindowAttention(p) => {
            attention::forward(model, acts, &p, Some(c.window), Some(layer))
        }
        MixerParams::FullAttention(p) => attention::forward(model, acts, &p, None, Some(layer)),
        MixerParams::Mlp(p) => mlp::forward(model, acts, &p),
    }
}

/// logits [batch, vocab] = RMSNorm_f(x) @ E^T (f32).
pub(super) fn head<T: Elem>(model: &CudaModel<T>, acts: &mut CudaActivations<T>) -> Result<()> {
    let c = &model.config;
    let rows = acts.shape.rows();
    let ln_f = model.tensor(model.layout.ln_f);
    let separate = norm_kernel(model, acts, &ln_f)?;
    let CudaActivations {
        x, normed, logits, ..
    } = acts;
    gemv_fwd(
        model.device(),
        GemvOut::F32 {
            out: logits,
            stride: c.vocab,
            accumulate: false,
        },
        norm_input(separate, x, normed, &ln_f, c.d_model, c.norm_eps),
        &model.tensor(model.layout.output_embedding()),
        LinearDims {
            rows,
            in_features: c.d_model,
            out_features: c.vocab,
        },
    )
}

/// With `SAMBA_FUSED_NORM=0` a sublayer's RMSNorm runs as its own kernel (into `acts.normed`,
/// read as plain rows) instead of in the prologue of the first dense layer; returns whether it
/// did.
fn norm_kernel<T: Elem>(
    model: &CudaModel<T>,
    acts: &mut CudaActivations<T>,
    norm: &CudaView<'_, T>,
) -> Result<bool> {
    if std::env::var("SAMBA_FUSED_NORM").map_or(true, |v| v != "0") {
        return Ok(false);
    }
    residual_rmsnorm_fwd(
        model.device(),
        &mut acts.x,
        &mut acts.normed,
        None,
        norm,
        Rows::All,
        model.config.norm_eps,
    )?;
    Ok(true)
}

/// The first dense layer's input: RMSNorm(x) in its prologue, or the rows `norm_kernel` wrote.
fn norm_input<'a, T: Elem>(
    separate: bool,
    x: &'a crate::Buffer<f32>,
    normed: &'a crate::Buffer<T>,
    norm: &'a CudaView<'_, T>,
    d: usize,
    eps: f32,
) -> GemvInput<'a, T> {
    if separate {
        GemvInput::Rows {
            inp: normed,
            stride: d,
        }
    } else {
        GemvInput::RmsNorm { x, w: norm, eps }
    }
}

/// x [rows, d] (the f32 residual stream) += inp [rows, in_features] @ w^T: every sublayer's
/// output projection.
fn add_to_residual<T: Elem>(
    dev: &CudaDevice,
    x: &mut Buffer<f32>,
    inp: &dyn StateIn<T>,
    w: &CudaView<'_, T>,
    rows: usize,
    in_features: usize,
    d: usize,
) -> Result<()> {
    gemv_fwd(
        dev,
        GemvOut::F32 {
            out: x,
            stride: d,
            accumulate: true,
        },
        GemvInput::Rows {
            inp,
            stride: in_features,
        },
        w,
        LinearDims {
            rows,
            in_features,
            out_features: d,
        },
    )
}

fn missing(what: &str) -> CudaError {
    CudaError::Unsupported {
        op: "CudaModel::decode_step",
        reason: format!("{what} missing from the activations or state (built for another model?)"),
    }
}

fn fused_mamba<T: Elem>(
    model: &CudaModel<T>,
    acts: &mut CudaActivations<T>,
    p: &MambaParams,
    norm: &CudaView<'_, T>,
    layer: LayerRef<'_, T>,
) -> Result<()> {
    let c = &model.config;
    let dev = &**model.device();
    let rows = acts.shape.rows();
    let (d, e, n, r) = (c.d_model, c.d_inner(), c.d_state, c.dt_rank);
    let xdim = r + 2 * n;
    let separate = norm_kernel(model, acts, norm)?;
    let CudaActivations {
        x, normed, mamba, ..
    } = acts;
    let m = mamba.as_mut().ok_or_else(|| missing("the Mamba buffers"))?;
    let LayerState::Mamba { conv, ssm } = layer.layer else {
        return Err(missing("a Mamba state"));
    };
    let conv_dims = ConvDims {
        batch: rows,
        seq: 1,
        channels: e,
        kernel: c.d_conv,
    };
    // [u | z] = conv step(RMSNorm(x) @ in_proj^T)
    gemv_conv_fwd(
        dev,
        &mut m.u.slice_mut(0..rows * e),
        &mut m.xz.slice_mut(0..rows * 2 * e),
        &mut conv.slice_mut(0..conv_dims.state_len()),
        norm_input(separate, x, normed, norm, d, c.norm_eps),
        &model.tensor(p.in_proj),
        d,
        &model.tensor(p.conv_w),
        &model.tensor(p.conv_b),
        conv_dims,
    )?;
    // x_dbl = u @ x_proj^T = [dt_low | B | C]
    gemv_fwd(
        dev,
        GemvOut::Elem {
            out: &mut m.x_dbl.slice_mut(0..rows * xdim),
            stride: xdim,
        },
        GemvInput::Rows {
            inp: &m.u.slice(0..rows * e),
            stride: e,
        },
        &model.tensor(p.x_proj),
        LinearDims {
            rows,
            in_features: e,
            out_features: xdim,
        },
    )?;
    // y = scan step(u, softplus(dt_low @ dt_proj^T + bias), A, B, C, D) * silu(z)
    let scan = ScanDims {
        batch: rows,
        seq: 1,
        d_inner: e,
        d_state: n,
    };
    mamba_scan_step_fwd(
        dev,
        &mut m.y.slice_mut(0..rows * e),
        &mut ssm.slice_mut(0..scan.state_len()),
        &ScanStepInputs {
            x_dbl: &m.x_dbl.slice(0..rows * xdim),
            u: &m.u.slice(0..rows * e),
            z: &m.xz.slice(e..rows * 2 * e),
            z_stride: 2 * e,
            dt_w: &model.tensor(p.dt_proj_w),
            dt_b: &model.tensor(p.dt_proj_b),
            a_log: &model.tensor(p.a_log),
            d_skip: &model.tensor(p.d_skip),
        },
        scan,
        r,
    )?;
    // x += y @ out_proj^T
    add_to_residual(
        dev,
        x,
        &m.y.slice(0..rows * e),
        &model.tensor(p.out_proj),
        rows,
        e,
        d,
    )
}

fn fused_attention<T: Elem>(
    model: &CudaModel<T>,
    acts: &mut CudaActivations<T>,
    p: &AttentionParams,
    window: Option<usize>,
    norm: &CudaView<'_, T>,
    layer: LayerRef<'_, T>,
) -> Result<()> {
    let c = &model.config;
    let dev = &**model.device();
    let rows = acts.shape.rows();
    let (d, qkv_dim, h_hd) = (c.d_model, c.qkv_dim(), c.heads * c.head_dim);
    let dims = QkvDims {
        batch: rows,
        seq: 1,
        heads: c.heads,
        kv_heads: c.kv_heads,
        head_dim: c.head_dim,
    };
    let separate = norm_kernel(model, acts, norm)?;
    let CudaActivations {
        x,
        normed,
        attention,
        ..
    } = acts;
    let a = attention
        .as_mut()
        .ok_or_else(|| missing("the attention buffers"))?;
    let LayerRef {
        layer: LayerState::Attention { k, v, cap, .. },
        pos,
        rope,
        max_position,
        part,
        n_split,
    } = layer
    else {
        return Err(missing("a key/value ring"));
    };
    let cap = *cap;
    let input = norm_input(separate, x, normed, norm, d, c.norm_eps);
    let w_qkv = model.tensor(p.qkv);
    let mut qkv = a.qkv.slice_mut(0..rows * qkv_dim);
    match rope {
        // qkv = rope(RMSNorm(x) @ attn^T) at each sequence's position
        Some(table) => gemv_rope_fwd(
            dev,
            &mut qkv,
            input,
            &w_qkv,
            d,
            dims,
            table,
            pos,
            max_position,
        )?,
        // NoPE: qkv = RMSNorm(x) @ attn^T
        None => gemv_fwd(
            dev,
            GemvOut::Elem {
                out: &mut qkv,
                stride: qkv_dim,
            },
            input,
            &w_qkv,
            LinearDims {
                rows,
                in_features: d,
                out_features: qkv_dim,
            },
        )?,
    }
    // att = attention of each token over its ring and itself; its key and value into the ring
    let ring = rows * cap * c.kv_heads * c.head_dim;
    attention_decode_fwd(
        dev,
        &mut a.att.slice_mut(0..rows * h_hd),
        &mut part.slice_mut(0..rows * c.heads * n_split * (c.head_dim + 2)),
        &mut a.done.slice_mut(0..rows * c.kv_heads),
        &a.qkv.slice(0..rows * qkv_dim),
        dims,
        window,
        &mut k.slice_mut(0..ring),
        &mut v.slice_mut(0..ring),
        pos,
        cap,
        n_split,
    )?;
    // x += att @ proj^T
    add_to_residual(
        dev,
        x,
        &a.att.slice(0..rows * h_hd),
        &model.tensor(p.proj),
        rows,
        h_hd,
        d,
    )
}

fn fused_mlp<T: Elem>(
    model: &CudaModel<T>,
    acts: &mut CudaActivations<T>,
    p: &MlpParams,
    norm: &CudaView<'_, T>,
) -> Result<()> {
    let c = &model.config;
    let dev = &**model.device();
    let rows = acts.shape.rows();
    let (d, hidden) = (c.d_model, p.hidden);
    let separate = norm_kernel(model, acts, norm)?;
    let CudaActivations { x, normed, mlp, .. } = acts;
    let m = mlp.as_mut().ok_or_else(|| missing("the MLP buffers"))?;
    // act = silu(xn @ w1^T) * (xn @ w2^T), xn = RMSNorm(x)
    gemv_swiglu_fwd(
        dev,
        &mut m.act.slice_mut(0..rows * hidden),
        norm_input(separate, x, normed, norm, d, c.norm_eps),
        &model.span(p.w1, 2 * hidden * d),
        LinearDims {
            rows,
            in_features: d,
            out_features: hidden,
        },
    )?;
    // x += act @ w3^T
    add_to_residual(
        dev,
        x,
        &m.act.slice(0..rows * hidden),
        &model.tensor(p.w3),
        rows,
        hidden,
        d,
    )
}
