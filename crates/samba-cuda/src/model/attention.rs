//! The attention mixer sublayer on the GPU (sliding-window or full causal), for
//! xn = RMSNorm(x) [rows, d] in `acts.normed`, its output added into the residual stream `acts.x`:
//!
//!   qkv    = xn @ attn^T              [rows, (H + 2G) hd], grouped-interleaved heads
//!   qkv    = rope(qkv)                q and k heads rotated at absolute positions (not for NoPE)
//!   att    = attention(qkv, window)   [rows, H hd]
//!   x     += att @ proj^T             [rows, d]
//!
//! With a state, the chunk of sequence b starts at position pos[b] and its queries also see
//! the keys of the ring; afterwards the chunk's keys and values go into the ring. A one-token
//! chunk (decoding) takes the split-over-keys decoding kernel, which stores its key and value
//! itself.

use samba_cpu::ops::attention::QkvDims;
use samba_cpu::ops::matmul::LinearDims;
use samba_model::layout::AttentionParams;

use super::plan::CudaActivations;
use super::state::{LayerRef, LayerState};
use super::CudaModel;
use crate::error::{CudaError, Result};
use crate::ops::attention::{attention_chunk_fwd, attention_decode_fwd, decode_applies, KvRing};
use crate::ops::kv_cache::kv_cache_write;
use crate::ops::matmul::{linear_fwd_into_f32, linear_fwd_strided};
use crate::ops::rope::rope_pos_fwd;
use crate::Elem;

pub(super) fn forward<T: Elem>(
    model: &CudaModel<T>,
    acts: &mut CudaActivations<T>,
    p: &AttentionParams,
    window: Option<usize>,
    layer: Option<LayerRef<'_, T>>,
) -> Result<()> {
    let c = &model.config;
    let dev = &**model.device();
    let shape = acts.shape;
    let rows = shape.rows();
    let h_hd = c.heads * c.head_dim;
    let dims = QkvDims {
        batch: shape.batch,
        seq: shape.seq,
        heads: c.heads,
        kv_heads: c.kv_heads,
        head_dim: c.head_dim,
    };
    let CudaActivations {
        x,
        normed,
        attention,
        rope,
        ..
    } = acts;
    let a = attention.as_mut().ok_or_else(|| CudaError::Unsupported {
        op: "CudaModel::forward",
        reason: "attention buffers missing from the activations (built for another model?)".into(),
    })?;

    // qkv = xn @ attn^T
    linear_fwd_strided(
        dev,
        &mut a.qkv,
        c.qkv_dim(),
        &*normed,
        c.d_model,
        &model.tensor(p.qkv),
        LinearDims {
            rows,
            in_features: c.d_model,
            out_features: c.qkv_dim(),
        },
    )?;

    match layer {
        None => {
            if let Some(table) = rope.as_ref() {
                rope_pos_fwd(dev, &mut a.qkv, table, None, shape.seq - 1, dims)?;
            }
            attention_chunk_fwd(
                dev,
                &mut a.att,
                None,
                &a.qkv,
                dims,
                window,
                None,
                model.attention_kernel,
            )?;
        }
        Some(LayerRef {
            layer: LayerState::Attention { k, v, cap, .. },
            pos,
            rope: state_rope,
            max_position,
            part,
            n_split,
        }) => {
            let cap = *cap;
            let ring = shape.batch * cap * c.kv_heads * c.head_dim;
            if let Some(table) = state_rope {
                rope_pos_fwd(
                    dev,
                    &mut a.qkv,
                    table,
                    Some(pos),
                    max_position + shape.seq - 1,
                    dims,
                )?;
            }
            let mut k = k.slice_mut(0..ring);
            let mut v = v.slice_mut(0..ring);
            if shape.seq == 1 && decode_applies::<T>(c.head_dim) {
                attention_decode_fwd(
                    dev,
                    &mut a.att,
                    &mut part.slice_mut(0..shape.batch * c.heads * n_split * (c.head_dim + 2)),
                    &mut a.done.slice_mut(0..shape.batch * c.kv_heads),
                    &a.qkv,
                    dims,
                    window,
                    &mut k,
                    &mut v,
                    pos,
                    cap,
                    n_split,
                )?;
            } else {
                {
                    let (k_r, v_r) = (k.slice(0..ring), v.slice(0..ring));
                    attention_chunk_fwd(
                        dev,
                        &mut a.att,
                        None,
                        &a.qkv,
                        dims,
                        window,
                        Some(KvRing {
                            k: &k_r,
                            v: &v_r,
                            pos,
                            cap,
                        }),
                        model.attention_kernel,
                    )?;
                }
                kv_cache_write(dev, &mut k, &mut v, &a.qkv, pos, dims, cap)?;
            }
        }
        Some(_) => {
            return Err(CudaError::Unsupported {
                op: "CudaModel::forward",
                reason: "the decode state has no key/value ring for this attention sublayer".into(),
            })
        }
    }

    // x += att @ proj^T
    linear_fwd_into_f32(
        dev,
        x,
        c.d_model,
        &a.att,
        h_hd,
        &model.tensor(p.proj),
        LinearDims {
            rows,
            in_features: h_hd,
            out_features: c.d_model,
        },
        true,
    )
}
