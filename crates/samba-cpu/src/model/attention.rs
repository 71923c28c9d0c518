//! The attention mixer sublayer (sliding-window or full causal), for xn = RMSNorm(x) [rows, d]:
//!
//!   qkv = xn @ attn^T            [rows, (H + 2G) hd], grouped-interleaved heads
//!   qkv = rope(qkv)              q and k heads rotated (NeoX half split); skipped for NoPE
//!   att = attention(qkv, window) [rows, H hd]
//!   out = att @ proj^T           [rows, d]

use samba_model::layout::AttentionParams;

use super::{Ctx, GradCtx};
use crate::ops::attention::{attention_bwd, attention_fwd, QkvDims};
use crate::ops::attention_cache::{attention_cached_fwd, KvCache};
use crate::ops::matmul::{linear_bwd, linear_fwd, LinearDims};
use crate::ops::rope::{rope_bwd, rope_fwd, RopeTable};
use rayon::prelude::*;

/// Saved for the backward pass.
pub struct AttentionActs {
    pub qkv: Vec<f32>, // [rows, (H + 2G) hd], after RoPE
    pub att: Vec<f32>, // [rows, H hd]
    pub lse: Vec<f32>, // [batch, H, seq]
}

impl AttentionActs {
    pub fn new(ctx: &Ctx) -> AttentionActs {
        let (c, rows) = (ctx.config, ctx.shape.rows());
        AttentionActs {
            qkv: vec![0.0; rows * c.qkv_dim()],
            att: vec![0.0; rows * c.heads * c.head_dim],
            lse: vec![0.0; rows * c.heads],
        }
    }
}

fn qkv_dims(ctx: &Ctx) -> QkvDims {
    let c = ctx.config;
    QkvDims {
        batch: ctx.shape.batch,
        seq: ctx.shape.seq,
        heads: c.heads,
        kv_heads: c.kv_heads,
        head_dim: c.head_dim,
    }
}

fn projections(ctx: &Ctx) -> (LinearDims, LinearDims) {
    let (c, rows) = (ctx.config, ctx.shape.rows());
    let h_hd = c.heads * c.head_dim;
    (
        LinearDims {
            rows,
            in_features: c.d_model,
            out_features: c.qkv_dim(),
        },
        LinearDims {
            rows,
            in_features: h_hd,
            out_features: c.d_model,
        },
    )
}

/// out [rows, d] from xn [rows, d]; `window` is `None` for full causal attention.
///
/// `cache`: when running chunk by chunk, the keys and values of each sequence before the chunk
/// and the position of each sequence's first chunk token; the chunk's own are appended.
#[allow(clippy::too_many_arguments)]
pub fn attention_sublayer_fwd(
    ctx: &Ctx,
    p: &AttentionParams,
    window: Option<usize>,
    out: &mut [f32],
    a: &mut AttentionActs,
    xn: &[f32],
    cache: Option<(&mut [KvCache], &[usize])>,
) {
    let (qkv_proj, out_proj) = projections(ctx);
    let dims = qkv_dims(ctx);
    let storage = ctx.storage;
    linear_fwd(&mut a.qkv, xn, ctx.tensor(p.qkv), qkv_proj);
    storage.store(&mut a.qkv);
    match cache {
        None => {
            if let Some(table) = ctx.rope {
                rope_fwd(&mut a.qkv, table, dims);
                storage.store(&mut a.qkv);
            }
            attention_fwd(&mut a.att, &mut a.lse, &a.qkv, dims, window);
        }
        Some((caches, positions)) => {
            // Each sequence sits at its own position: rotate and attend one sequence at a time.
            let one = QkvDims { batch: 1, ..dims };
            let c = ctx.config;
            a.qkv
                .par_chunks_mut(dims.seq * dims.qkv_dim())
                .zip(a.att.par_chunks_mut(dims.seq * dims.out_dim()))
                .zip(caches.par_iter_mut().zip(positions.par_iter()))
                .for_each(|((qkv, att), (cache, &position))| {
                    if let Some(base) = c.rope_base {
                        let table = RopeTable::new(base, c.head_dim, position, dims.seq);
                        rope_fwd(qkv, &table, one);
                        // Before the keys and values go into the cache.
                        storage.store(qkv);
                    }
                    attention_cached_fwd(att, qkv, cache, one, window);
                });
        }
    }
    storage.store(&mut a.att);
    linear_fwd(out, &a.att, ctx.tensor(p.proj), out_proj);
}

/// Backward of [`attention_sublayer_fwd`]: adds d loss / d xn into `dxn`.
#[allow(clippy::too_many_arguments)]
pub fn attention_sublayer_bwd(
    ctx: &Ctx,
    g: &mut GradCtx,
    p: &AttentionParams,
    window: Option<usize>,
    dxn: &mut [f32],
    dout: &[f32],
    a: &AttentionActs,
    xn: &[f32],
) {
    let (qkv_proj, out_proj) = projections(ctx);
    let dims = qkv_dims(ctx);
    // out = att @ proj^T
    let mut datt = vec![0.0; a.att.len()];
    linear_bwd(
        Some(&mut datt),
        g.tensor(p.proj),
        dout,
        &a.att,
        ctx.tensor(p.proj),
        out_proj,
    );
    // att = attention(qkv)
    let mut dqkv = vec![0.0; a.qkv.len()];
    attention_bwd(&mut dqkv, &datt, &a.att, &a.lse, &a.qkv, dims, window);
    // qkv = rope(qkv_pre): the rotation's transpose takes the gradient back.
    if let Some(table) = ctx.rope {
        rope_bwd(&mut dqkv, table, dims);
    }
    // qkv_pre = xn @ attn^T
    linear_bwd(
        Some(dxn),
        g.tensor(p.qkv),
        &dqkv,
        xn,
        ctx.tensor(p.qkv),
        qkv_proj,
    );
}
