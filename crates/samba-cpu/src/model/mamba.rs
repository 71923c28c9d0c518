//! The Mamba-1 mixer sublayer (shared/SPEC.md section 1), for xn = RMSNorm(x) [rows, d]:
//!
//!   xz      = xn @ in_proj^T                      [rows, 2E];  x_in = xz[:, :E], z = xz[:, E:]
//!   u       = silu(causal_conv1d(x_in) + bias)   [rows, E]
//!   x_dbl   = u @ x_proj^T                        [rows, R + 2N] = [dt_low | B | C]
//!   delta   = dt_low @ dt_proj^T                  [rows, E]  (bias and softplus inside the scan)
//!   y       = selective_scan(u, delta, A, B, C, D) * silu(z)   [rows, E]
//!   out     = y @ out_proj^T                      [rows, d]

use samba_model::layout::MambaParams;

use super::{Ctx, GradCtx};
use crate::ops::causal_conv::{causal_conv1d_silu_bwd, causal_conv1d_silu_fwd, ConvDims};
use crate::ops::matmul::{linear_bwd, linear_fwd, LinearDims};
use crate::ops::selective_scan::{
    selective_scan_bwd, selective_scan_fwd, ScanDims, ScanGrads, ScanInputs,
};

/// Saved for the backward pass.
pub struct MambaActs {
    pub x_in: Vec<f32>,   // [rows, E]
    pub z: Vec<f32>,      // [rows, E]
    pub u: Vec<f32>,      // [rows, E]
    pub dt_low: Vec<f32>, // [rows, R]
    pub b: Vec<f32>,      // [rows, N]
    pub c: Vec<f32>,      // [rows, N]
    pub delta: Vec<f32>,  // [rows, E], before bias and softplus
    pub y: Vec<f32>,      // [rows, E], gated scan output
    xz: Vec<f32>,         // [rows, 2E], split into x_in and z
    x_dbl: Vec<f32>,      // [rows, R + 2N], split into dt_low, b, c
}

/// The widths of one Mamba mixer.
#[derive(Clone, Copy)]
struct Widths {
    rows: usize,
    d: usize,
    e: usize,
    n: usize,
    r: usize,
}

impl Widths {
    fn new(ctx: &Ctx) -> Widths {
        let c = ctx.config;
        Widths {
            rows: ctx.shape.rows(),
            d: c.d_model,
            e: c.d_inner(),
            n: c.d_state,
            r: c.dt_rank,
        }
    }
    fn linear(&self, in_features: usize, out_features: usize) -> LinearDims {
        LinearDims {
            rows: self.rows,
            in_features,
            out_features,
        }
    }
}

impl MambaActs {
    pub fn new(ctx: &Ctx) -> MambaActs {
        let w = Widths::new(ctx);
        let (rows, e) = (w.rows, w.e);
        MambaActs {
            x_in: vec![0.0; rows * e],
            z: vec![0.0; rows * e],
            u: vec![0.0; rows * e],
            dt_low: vec![0.0; rows * w.r],
            b: vec![0.0; rows * w.n],
            c: vec![0.0; rows * w.n],
            delta: vec![0.0; rows * e],
            y: vec![0.0; rows * e],
            xz: vec![0.0; rows * 2 * e],
            x_dbl: vec![0.0; rows * (w.r + 2 * w.n)],
        }
    }
}

/// Splits each row of `src` [rows, sum(widths)] into the destinations, in order.
fn split_columns(src: &[f32], dsts: &mut [&mut [f32]], widths: &[usize]) {
    let total: usize = widths.iter().sum();
    for (row, chunk) in src.chunks(total).enumerate() {
        let mut col = 0;
        for (dst, &w) in dsts.iter_mut().zip(widths) {
            dst[row * w..(row + 1) * w].copy_from_slice(&chunk[col..col + w]);
            col += w;
        }
    }
}

/// The inverse of [`split_columns`]: rows of the parts side by side.
fn join_columns(dst: &mut [f32], srcs: &[&[f32]], widths: &[usize]) {
    let total: usize = widths.iter().sum();
    for (row, chunk) in dst.chunks_mut(total).enumerate() {
        let mut col = 0;
        for (src, &w) in srcs.iter().zip(widths) {
            chunk[col..col + w].copy_from_slice(&src[row * w..(row + 1) * w]);
            col += w;
        }
    }
}

fn scan_inputs<'a>(ctx: &'a Ctx, p: &MambaParams, a: &'a MambaActs) -> ScanInputs<'a> {
    ScanInputs {
        u: &a.u,
        delta_raw: &a.delta,
        delta_bias: ctx.tensor(p.dt_proj_b),
        a_log: ctx.tensor(p.a_log),
        b: &a.b,
        c: &a.c,
        d_skip: ctx.tensor(p.d_skip),
        z: &a.z,
    }
}

/// out [rows, d] from xn [rows, d].
///
/// `state`: the (conv, ssm) state of the batch's sequences when running chunk by chunk; read as
/// the state before the chunk and replaced by the state after it.
pub fn mamba_fwd(
    ctx: &Ctx,
    p: &MambaParams,
    out: &mut [f32],
    a: &mut MambaActs,
    xn: &[f32],
    state: Option<(&mut [f32], &mut [f32])>,
) {
    let w = Widths::new(ctx);
    let conv = ConvDims {
        batch: ctx.shape.batch,
        seq: ctx.shape.seq,
        channels: w.e,
        kernel: ctx.config.d_conv,
    };
    let scan = ScanDims {
        batch: ctx.shape.batch,
        seq: ctx.shape.seq,
        d_inner: w.e,
        d_state: w.n,
    };

    linear_fwd(&mut a.xz, xn, ctx.tensor(p.in_proj), w.linear(w.d, 2 * w.e));
    // Rounding x_in here also rounds the conv state, which holds x_in values.
    ctx.storage.store(&mut a.xz);
    split_columns(&a.xz, &mut [&mut a.x_in, &mut a.z], &[w.e, w.e]);
    // The states before the chunk are copied, since the kernels write the states after it.
    let (conv_state, ssm_state) = match state {
        Some((conv, ssm)) => (Some(conv), Some(ssm)),
        None => (None, None),
    };
    let conv_before = conv_state.as_ref().map(|s| s.to_vec());
    causal_conv1d_silu_fwd(
        &mut a.u,
        &a.x_in,
        ctx.tensor(p.conv_w),
        ctx.tensor(p.conv_b),
        conv,
        conv_before.as_deref(),
        conv_state,
    );
    ctx.storage.store(&mut a.u);
    linear_fwd(
        &mut a.x_dbl,
        &a.u,
        ctx.tensor(p.x_proj),
        w.linear(w.e, w.r + 2 * w.n),
    );
    ctx.storage.store(&mut a.x_dbl);
    split_columns(
        &a.x_dbl,
        &mut [&mut a.dt_low, &mut a.b, &mut a.c],
        &[w.r, w.n, w.n],
    );
    linear_fwd(
        &mut a.delta,
        &a.dt_low,
        ctx.tensor(p.dt_proj_w),
        w.linear(w.r, w.e),
    );
    ctx.storage.store(&mut a.delta);
    let mut y = std::mem::take(&mut a.y);
    let ssm_before = ssm_state.as_ref().map(|s| s.to_vec());
    selective_scan_fwd(
        &mut y,
        &scan_inputs(ctx, p, a),
        scan,
        ssm_before.as_deref(),
        ssm_state,
    );
    ctx.storage.store(&mut y);
    a.y = y;
    linear_fwd(out, &a.y, ctx.tensor(p.out_proj), w.linear(w.e, w.d));
}

/// Backward of [`mamba_fwd`]: adds d loss / d xn into `dxn`, weight gradients into `g`.
pub fn mamba_bwd(
    ctx: &Ctx,
    g: &mut GradCtx,
    p: &MambaParams,
    dxn: &mut [f32],
    dout: &[f32],
    a: &MambaActs,
    xn: &[f32],
) {
    let w = Widths::new(ctx);
    let (rows, e, n, r) = (w.rows, w.e, w.n, w.r);
    let conv = ConvDims {
        batch: ctx.shape.batch,
        seq: ctx.shape.seq,
        channels: e,
        kernel: ctx.config.d_conv,
    };
    let scan = ScanDims {
        batch: ctx.shape.batch,
        seq: ctx.shape.seq,
        d_inner: e,
        d_state: n,
    };

    // out = y @ out_proj^T
    let mut dy = vec![0.0; rows * e];
    linear_bwd(
        Some(&mut dy),
        g.tensor(p.out_proj),
        dout,
        &a.y,
        ctx.tensor(p.out_proj),
        w.linear(e, w.d),
    );

    // y = scan(u, delta, ...) * silu(z)
    let mut du = vec![0.0; rows * e];
    let mut ddelta = vec![0.0; rows * e];
    let mut db = vec![0.0; rows * n];
    let mut dc = vec![0.0; rows * n];
    let mut dz = vec![0.0; rows * e];
    {
        let [ddelta_bias, da_log, dd_skip] = g.tensors([p.dt_proj_b, p.a_log, p.d_skip]);
        let mut grads = ScanGrads {
            du: &mut du,
            ddelta_raw: &mut ddelta,
            ddelta_bias,
            da_log,
            db: &mut db,
            dc: &mut dc,
            dd_skip,
            dz: &mut dz,
        };
        selective_scan_bwd(&mut grads, &dy, &scan_inputs(ctx, p, a), scan);
    }

    // delta = dt_low @ dt_proj^T
    let mut ddt_low = vec![0.0; rows * r];
    linear_bwd(
        Some(&mut ddt_low),
        g.tensor(p.dt_proj_w),
        &ddelta,
        &a.dt_low,
        ctx.tensor(p.dt_proj_w),
        w.linear(r, e),
    );

    // x_dbl = u @ x_proj^T, x_dbl = [dt_low | B | C]; u also feeds the scan, so du accumulates.
    let mut dx_dbl = vec![0.0; rows * (r + 2 * n)];
    join_columns(&mut dx_dbl, &[&ddt_low, &db, &dc], &[r, n, n]);
    linear_bwd(
        Some(&mut du),
        g.tensor(p.x_proj),
        &dx_dbl,
        &a.u,
        ctx.tensor(p.x_proj),
        w.linear(e, r + 2 * n),
    );

    // u = silu(conv(x_in))
    let mut dx_in = vec![0.0; rows * e];
    {
        let [dconv_w, dconv_b] = g.tensors([p.conv_w, p.conv_b]);
        causal_conv1d_silu_bwd(
            &mut dx_in,
            dconv_w,
            dconv_b,
            &du,
            &a.x_in,
            ctx.tensor(p.conv_w),
            ctx.tensor(p.conv_b),
            conv,
        );
    }

    // xz = xn @ in_proj^T, xz = [x_in | z]
    let mut dxz = vec![0.0; rows * 2 * e];
    join_columns(&mut dxz, &[&dx_in, &dz], &[e, e]);
    linear_bwd(
        Some(dxn),
        g.tensor(p.in_proj),
        &dxz,
        xn,
        ctx.tensor(p.in_proj),
        w.linear(w.d, 2 * e),
    );
}
