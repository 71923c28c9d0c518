//! The SwiGLU MLP sublayer: out = w3( silu(w1 xn) * (w2 xn) ), xn = RMSNorm(x).

use samba_model::layout::MlpParams;

use super::{Ctx, GradCtx};
use crate::ops::matmul::{linear_bwd, linear_fwd, LinearDims};
use crate::ops::swiglu::{swiglu_bwd, swiglu_fwd};

/// Saved for the backward pass; all [rows, hidden].
pub struct MlpActs {
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub act: Vec<f32>,
}

impl MlpActs {
    pub fn new(rows: usize, hidden: usize) -> MlpActs {
        MlpActs {
            gate: vec![0.0; rows * hidden],
            up: vec![0.0; rows * hidden],
            act: vec![0.0; rows * hidden],
        }
    }
}

fn dims(ctx: &Ctx, p: &MlpParams) -> (LinearDims, LinearDims) {
    let (rows, d) = (ctx.shape.rows(), ctx.config.d_model);
    let up = LinearDims {
        rows,
        in_features: d,
        out_features: p.hidden,
    };
    let down = LinearDims {
        rows,
        in_features: p.hidden,
        out_features: d,
    };
    (up, down)
}

/// out [rows, d] = w3( silu(w1 xn) * (w2 xn) ), xn [rows, d].
pub fn mlp_fwd(ctx: &Ctx, p: &MlpParams, out: &mut [f32], acts: &mut MlpActs, xn: &[f32]) {
    let (up_dims, down_dims) = dims(ctx, p);
    linear_fwd(&mut acts.gate, xn, ctx.tensor(p.w1), up_dims);
    linear_fwd(&mut acts.up, xn, ctx.tensor(p.w2), up_dims);
    ctx.storage.store(&mut acts.gate);
    ctx.storage.store(&mut acts.up);
    swiglu_fwd(&mut acts.act, &acts.gate, &acts.up);
    ctx.storage.store(&mut acts.act);
    linear_fwd(out, &acts.act, ctx.tensor(p.w3), down_dims);
}

/// Backward of [`mlp_fwd`]: adds d loss / d xn into `dxn` and the weight gradients into `grads`.
pub fn mlp_bwd(
    ctx: &Ctx,
    g: &mut GradCtx,
    p: &MlpParams,
    dxn: &mut [f32],
    dout: &[f32],
    acts: &MlpActs,
    xn: &[f32],
) {
    let (up_dims, down_dims) = dims(ctx, p);
    let n = acts.act.len();
    // out = act @ w3^T
    let mut dact = vec![0.0; n];
    linear_bwd(
        Some(&mut dact),
        g.tensor(p.w3),
        dout,
        &acts.act,
        ctx.tensor(p.w3),
        down_dims,
    );
    // act = silu(gate) * up
    let mut dgate = vec![0.0; n];
    let mut dup = vec![0.0; n];
    swiglu_bwd(&mut dgate, &mut dup, &dact, &acts.gate, &acts.up);
    // gate = xn @ w1^T, up = xn @ w2^T: both feed xn, so their input gradients add.
    linear_bwd(
        Some(dxn),
        g.tensor(p.w1),
        &dgate,
        xn,
        ctx.tensor(p.w1),
        up_dims,
    );
    linear_bwd(
        Some(dxn),
        g.tensor(p.w2),
        &dup,
        xn,
        ctx.tensor(p.w2),
        up_dims,
    );
}
