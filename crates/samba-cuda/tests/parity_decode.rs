//! The decoding step's fused kernels against their CPU twins, compositions of the samba-cpu
//! primitives they fuse, on fresh random inputs (the seed is printed) with every output
//! poisoned first:
//!
//! | GPU | CPU twin |
//! |---|---|
//! | `gemv_fwd` (rows, or RMSNorm of f32 rows; T, f32 or f32 += out) | `rmsnorm_fwd` (rounded to T) then `linear_fwd` |
//! | `gemv_swiglu_fwd` | `rmsnorm_fwd`, `linear_fwd` over [w1; w2] (gate and up rounded to T), `swiglu_fwd` |
//! | `gemv_rope_fwd` | `rmsnorm_fwd`, `linear_fwd` (rounded), `rope_fwd` at each row's position |
//! | `gemv_conv_fwd` | `rmsnorm_fwd`, `linear_fwd` (rounded), `causal_conv1d_silu_fwd` of one step with its state |
//! | `mamba_scan_step_fwd` | `linear_fwd` (dt_proj, rounded), `selective_scan_fwd` of one step with its state |
//!
//! Intermediate values are rounded to T on both sides where the unfused GPU path stores them.
//! f32 storage within 1e-5, bf16 within 1e-2 (max |gpu - cpu| / max |cpu|); the SSM state is f32
//! in both, held to 1e-5 in f32 storage and to 1e-2 in bf16, where it follows a delta rounded to
//! bf16 (a sum in another order may round to the neighbouring bf16 value).

use half::bf16;
use samba_cpu::ops::attention::QkvDims;
use samba_cpu::ops::causal_conv::{causal_conv1d_silu_fwd, ConvDims};
use samba_cpu::ops::matmul::{linear_fwd, LinearDims};
use samba_cpu::ops::rmsnorm::rmsnorm_fwd;
use samba_cpu::ops::rope::{rope_fwd, RopeTable};
use samba_cpu::ops::selective_scan::{selective_scan_fwd, ScanDims, ScanInputs};
use samba_cpu::ops::swiglu::swiglu_fwd;
use samba_cpu::testing::random_vec;
use samba_cuda::ops::gemv::{
    gemv_conv_fwd, gemv_fwd, gemv_rope_fwd, gemv_swiglu_fwd, GemvInput, GemvOut,
};
use samba_cuda::ops::mamba_decode::{mamba_scan_step_fwd, ScanStepInputs};
use samba_cuda::ops::rope::DeviceRopeTable;
use samba_cuda::{CudaDevice, CudaError, Elem};

mod common;
use common::*;

const EPS: f32 = 1e-5;

/// RMSNorm of x [rows, dim] with weight w, rounded to T (the normed input as the GEMV stages it).
fn normed<T: Elem>(x: &[f32], w: &[f32]) -> Vec<f32> {
    let dim = w.len();
    let mut out = vec![0.0; x.len()];
    let mut rstd = vec![0.0; x.len() / dim];
    rmsnorm_fwd(&mut out, &mut rstd, x, w, EPS);
    rounded::<T>(&out)
}

/// A norm weight near 1, as stored in T.
fn norm_weight<T: Elem>(dim: usize, s: u64) -> Vec<f32> {
    rounded::<T>(
        &random_vec(dim, s, 0.3)
            .iter()
            .map(|v| v + 1.0)
            .collect::<Vec<_>>(),
    )
}

fn linear(
    inp: &[f32],
    w: &[f32],
    rows: usize,
    in_features: usize,
    out_features: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; rows * out_features];
    linear_fwd(
        &mut out,
        inp,
        w,
        LinearDims {
            rows,
            in_features,
            out_features,
        },
    );
    out
}

/// Columns [c0, c0 + width) of each row of a [rows, stride] matrix.
fn columns(v: &[f32], stride: usize, c0: usize, width: usize) -> Vec<f32> {
    v.chunks(stride)
        .flat_map(|r| r[c0..c0 + width].to_vec())
        .collect()
}

// ---------------------------------------------------------------------------------------------

/// gemv_fwd with every input and output kind; `offset` > 0 places w at an unaligned address
/// (the scalar path).
fn gemv_case<T: Elem>(
    dev: &CudaDevice,
    rows: usize,
    in_f: usize,
    out_f: usize,
    offset: usize,
    s: u64,
) {
    let dims = LinearDims {
        rows,
        in_features: in_f,
        out_features: out_f,
    };
    let (inp_stride, out_stride) = (in_f + 8, out_f + 3);
    let inp_wide = rounded::<T>(&random_vec(rows * inp_stride, s, 1.0));
    let inp = columns(&inp_wide, inp_stride, 0, in_f);
    let w_all = rounded::<T>(&random_vec(offset + out_f * in_f, s + 1, 0.1));
    let w = &w_all[offset..];
    let x = random_vec(rows * in_f, s + 2, 2.0);
    let nw = norm_weight::<T>(in_f, s + 3);
    let base = random_vec(rows * out_stride, s + 4, 1.0);
    let g_w_all = up::<T>(dev, &w_all);
    let g_w = g_w_all.slice(offset..);
    let (g_inp, g_x, g_nw) = (
        up::<T>(dev, &inp_wide),
        dev.upload(&x).expect("upload"),
        up::<T>(dev, &nw),
    );
    let shape = format!(
        "rows {rows} in {in_f} out {out_f}{}",
        if offset > 0 { " unaligned" } else { "" }
    );
    let rows_in = || GemvInput::Rows {
        inp: &g_inp,
        stride: inp_stride,
    };
    let norm_in = || GemvInput::RmsNorm {
        x: &g_x,
        w: &g_nw,
        eps: EPS,
    };
    let prod = linear(&inp, w, rows, in_f, out_f);
    let prod_norm = linear(&normed::<T>(&x, &nw), w, rows, in_f, out_f);

    for (input, want, what) in [
        (rows_in(), &prod, "rows"),
        (norm_in(), &prod_norm, "rmsnorm"),
    ] {
        // T out
        let mut g_out = poisoned::<T>(dev, rows * out_stride);
        gemv_fwd(
            dev,
            GemvOut::Elem {
                out: &mut g_out,
                stride: out_stride,
            },
            input,
            &g_w,
            dims,
        )
        .expect("gemv_fwd");
        check(
            &format!("gemv_fwd {what}"),
            T::SUFFIX,
            &shape,
            &columns(&down(dev, &g_out), out_stride, 0, out_f),
            want,
            tol::<T>(),
        );
    }
    for (input, want, what) in [
        (rows_in(), &prod, "rows"),
        (norm_in(), &prod_norm, "rmsnorm"),
    ] {
        // f32 out
        let mut g_out = poisoned::<f32>(dev, rows * out_stride);
        gemv_fwd(
            dev,
            GemvOut::F32 {
                out: &mut g_out,
                stride: out_stride,
                accumulate: false,
            },
            input,
            &g_w,
            dims,
        )
        .expect("gemv_fwd f32");
        check(
            &format!("gemv_fwd {what} f32 out"),
            T::SUFFIX,
            &shape,
            &columns(
                &dev.download(&g_out).expect("download"),
                out_stride,
                0,
                out_f,
            ),
            want,
            if T::SUFFIX == "f32" { F32_TOL } else { 1e-3 },
        );
    }
    // f32 +=: the residual stream
    let mut g_acc = dev.upload(&base).expect("upload");
    gemv_fwd(
        dev,
        GemvOut::F32 {
            out: &mut g_acc,
            stride: out_stride,
            accumulate: true,
        },
        rows_in(),
        &g_w,
        dims,
    )
    .expect("gemv_fwd +=");
    let want: Vec<f32> = columns(&base, out_stride, 0, out_f)
        .iter()
        .zip(&prod)
        .map(|(a, b)| a + b)
        .collect();
    check(
        "gemv_fwd rows f32 +=",
        T::SUFFIX,
        &shape,
        &columns(
            &dev.download(&g_acc).expect("download"),
            out_stride,
            0,
            out_f,
        ),
        &want,
        if T::SUFFIX == "f32" { F32_TOL } else { 1e-3 },
    );
}

#[test]
fn gemv_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("gemv_fwd");
    for rows in 1..=4 {
        let r = rows as u64;
        gemv_case::<f32>(dev, rows, 256, 77, 0, s + r);
        gemv_case::<bf16>(dev, rows, 2304, 600, 0, s + 10 + r);
        gemv_case::<bf16>(dev, rows, 30, 13, 0, s + 20 + r);
        gemv_case::<f32>(dev, rows, 64, 19, 1, s + 30 + r);
    }
    // The model's shapes: one slice per row (d -> 9216), k-split (4608 -> 2304, 6144 -> 2304,
    // 4608 -> 176), long rows (32768 -> 5, 128 KiB of staged input), unaligned weights.
    gemv_case::<bf16>(dev, 1, 2304, 9216, 0, s + 40);
    gemv_case::<bf16>(dev, 2, 4608, 2304, 0, s + 41);
    gemv_case::<bf16>(dev, 1, 6144, 2304, 0, s + 42);
    gemv_case::<bf16>(dev, 3, 4608, 176, 0, s + 43);
    gemv_case::<bf16>(dev, 2, 32768, 5, 0, s + 44);
    gemv_case::<bf16>(dev, 2, 2304, 100, 3, s + 45);
    gemv_case::<f32>(dev, 4, 6144, 300, 0, s + 46);
}

fn swiglu_case<T: Elem>(dev: &CudaDevice, rows: usize, d: usize, hidden: usize, s: u64) {
    let x = random_vec(rows * d, s, 2.0);
    let nw = norm_weight::<T>(d, s + 1);
    let w12 = rounded::<T>(&random_vec(2 * hidden * d, s + 2, 0.1));
    let gu = rounded::<T>(&linear(&normed::<T>(&x, &nw), &w12, rows, d, 2 * hidden));
    let (gate, upv) = (
        columns(&gu, 2 * hidden, 0, hidden),
        columns(&gu, 2 * hidden, hidden, hidden),
    );
    let mut want = vec![0.0; rows * hidden];
    swiglu_fwd(&mut want, &gate, &upv);
    let mut g_act = poisoned::<T>(dev, rows * hidden);
    gemv_swiglu_fwd(
        dev,
        &mut g_act,
        GemvInput::RmsNorm {
            x: &dev.upload(&x).expect("upload"),
            w: &up::<T>(dev, &nw),
            eps: EPS,
        },
        &up::<T>(dev, &w12),
        LinearDims {
            rows,
            in_features: d,
            out_features: hidden,
        },
    )
    .expect("gemv_swiglu_fwd");
    check(
        "gemv_swiglu_fwd",
        T::SUFFIX,
        &format!("rows {rows} d {d} hidden {hidden}"),
        &down(dev, &g_act),
        &want,
        tol::<T>(),
    );
}

#[test]
fn gemv_swiglu_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("gemv_swiglu_fwd");
    for rows in 1..=4 {
        let r = rows as u64;
        swiglu_case::<f32>(dev, rows, 256, 96, s + r);
        swiglu_case::<bf16>(dev, rows, 2304, 600, s + 10 + r);
        swiglu_case::<bf16>(dev, rows, 32, 64, s + 20 + r);
    }
}

fn rope_case<T: Elem>(dev: &CudaDevice, rows: usize, d: usize, dims: QkvDims, s: u64) {
    let dims = QkvDims {
        batch: rows,
        seq: 1,
        ..dims
    };
    let n_out = dims.qkv_dim();
    let x = random_vec(rows * d, s, 2.0);
    let nw = norm_weight::<T>(d, s + 1);
    let w = rounded::<T>(&random_vec(n_out * d, s + 2, 0.1));
    let pos: Vec<i32> = (0..rows)
        .map(|r| ((s as usize + 37 * r) % 700) as i32)
        .collect();
    let mut want = rounded::<T>(&linear(&normed::<T>(&x, &nw), &w, rows, d, n_out));
    for (r, row) in want.chunks_mut(n_out).enumerate() {
        let table = RopeTable::new(10000.0, dims.head_dim, pos[r] as usize, 1);
        rope_fwd(row, &table, QkvDims { batch: 1, ..dims });
    }
    let max_position = *pos.iter().max().unwrap_or(&0) as usize;
    let table = DeviceRopeTable::upload(
        dev,
        &RopeTable::new(10000.0, dims.head_dim, 0, max_position + 1),
    )
    .expect("table");
    let mut g_qkv = poisoned::<T>(dev, rows * n_out);
    gemv_rope_fwd(
        dev,
        &mut g_qkv,
        GemvInput::RmsNorm {
            x: &dev.upload(&x).expect("upload"),
            w: &up::<T>(dev, &nw),
            eps: EPS,
        },
        &up::<T>(dev, &w),
        d,
        dims,
        &table,
        &dev.upload(&pos).expect("upload"),
        max_position,
    )
    .expect("gemv_rope_fwd");
    check(
        "gemv_rope_fwd",
        T::SUFFIX,
        &format!(
            "rows {rows} d {d} h {}/{} hd {}",
            dims.heads, dims.kv_heads, dims.head_dim
        ),
        &down(dev, &g_qkv),
        &want,
        tol::<T>(),
    );
}

#[test]
fn gemv_rope_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("gemv_rope_fwd");
    let heads = |heads, kv_heads, head_dim| QkvDims {
        batch: 1,
        seq: 1,
        heads,
        kv_heads,
        head_dim,
    };
    for rows in 1..=4 {
        let r = rows as u64;
        rope_case::<f32>(dev, rows, 256, heads(4, 2, 64), s + r);
        rope_case::<bf16>(dev, rows, 2304, heads(18, 18, 128), s + 10 + r);
        rope_case::<bf16>(dev, rows, 32, heads(4, 2, 8), s + 20 + r);
        rope_case::<f32>(dev, rows, 48, heads(6, 1, 8), s + 30 + r);
    }
}

fn conv_case<T: Elem>(dev: &CudaDevice, rows: usize, d: usize, e: usize, k: usize, s: u64) {
    let x = random_vec(rows * d, s, 2.0);
    let nw = norm_weight::<T>(d, s + 1);
    let w = rounded::<T>(&random_vec(2 * e * d, s + 2, 0.1));
    let conv_w = rounded::<T>(&random_vec(e * k, s + 3, 0.5));
    let conv_b = rounded::<T>(&random_vec(e, s + 4, 0.5));
    let dims = ConvDims {
        batch: rows,
        seq: 1,
        channels: e,
        kernel: k,
    };
    let state = rounded::<T>(&random_vec(dims.state_len(), s + 5, 1.0));
    let xz = rounded::<T>(&linear(&normed::<T>(&x, &nw), &w, rows, d, 2 * e));
    let (x_in, z) = (columns(&xz, 2 * e, 0, e), columns(&xz, 2 * e, e, e));
    let mut want_u = vec![0.0; rows * e];
    let mut want_state = vec![0.0; dims.state_len()];
    causal_conv1d_silu_fwd(
        &mut want_u,
        &x_in,
        &conv_w,
        &conv_b,
        dims,
        Some(&state),
        Some(&mut want_state),
    );
    let mut g_u = poisoned::<T>(dev, rows * e);
    let mut g_xz = poisoned::<T>(dev, rows * 2 * e);
    let mut g_state = up::<T>(dev, &state);
    gemv_conv_fwd(
        dev,
        &mut g_u,
        &mut g_xz,
        &mut g_state,
        GemvInput::RmsNorm {
            x: &dev.upload(&x).expect("upload"),
            w: &up::<T>(dev, &nw),
            eps: EPS,
        },
        &up::<T>(dev, &w),
        d,
        &up::<T>(dev, &conv_w),
        &up::<T>(dev, &conv_b),
        dims,
    )
    .expect("gemv_conv_fwd");
    let shape = format!("rows {rows} d {d} E {e} d_conv {k}");
    let tol = tol::<T>();
    check(
        "gemv_conv_fwd u",
        T::SUFFIX,
        &shape,
        &down(dev, &g_u),
        &want_u,
        tol,
    );
    check(
        "gemv_conv_fwd z",
        T::SUFFIX,
        &shape,
        &columns(&down(dev, &g_xz), 2 * e, e, e),
        &z,
        tol,
    );
    check(
        "gemv_conv_fwd state",
        T::SUFFIX,
        &shape,
        &down(dev, &g_state),
        &want_state,
        tol,
    );
}

#[test]
fn gemv_conv_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("gemv_conv_fwd");
    for rows in 1..=4 {
        let r = rows as u64;
        conv_case::<f32>(dev, rows, 256, 320, 4, s + r);
        conv_case::<bf16>(dev, rows, 2304, 4608, 4, s + 10 + r);
        conv_case::<bf16>(dev, rows, 32, 64, 4, s + 20 + r);
        conv_case::<f32>(dev, rows, 40, 24, 2, s + 30 + r);
    }
}

#[allow(clippy::too_many_arguments)]
fn scan_step_case<T: Elem>(dev: &CudaDevice, rows: usize, e: usize, n: usize, r: usize, s: u64) {
    let xdim = r + 2 * n;
    let x_dbl = rounded::<T>(&random_vec(rows * xdim, s, 1.0));
    let u = rounded::<T>(&random_vec(rows * e, s + 1, 1.0));
    let xz = rounded::<T>(&random_vec(rows * 2 * e, s + 2, 2.0));
    let dt_w = rounded::<T>(&random_vec(e * r, s + 3, 0.3));
    let dt_b = rounded::<T>(&random_vec(e, s + 4, 1.0));
    let a_log = rounded::<T>(
        &random_vec(e * n, s + 5, 1.0)
            .iter()
            .map(|v| v + 1.0)
            .collect::<Vec<_>>(),
    );
    let d_skip = rounded::<T>(&random_vec(e, s + 6, 1.0));
    let h = random_vec(rows * e * n, s + 7, 1.0);
    let dims = ScanDims {
        batch: rows,
        seq: 1,
        d_inner: e,
        d_state: n,
    };
    let dt_low = columns(&x_dbl, xdim, 0, r);
    let delta_raw = rounded::<T>(&linear(&dt_low, &dt_w, rows, r, e));
    let (bm, cm) = (columns(&x_dbl, xdim, r, n), columns(&x_dbl, xdim, r + n, n));
    let z = columns(&xz, 2 * e, e, e);
    let mut want_y = vec![0.0; rows * e];
    let mut want_h = vec![0.0; h.len()];
    selective_scan_fwd(
        &mut want_y,
        &ScanInputs {
            u: &u,
            delta_raw: &delta_raw,
            delta_bias: &dt_b,
            a_log: &a_log,
            b: &bm,
            c: &cm,
            d_skip: &d_skip,
            z: &z,
        },
        dims,
        Some(&h),
        Some(&mut want_h),
    );
    let g_xz = up::<T>(dev, &xz);
    let mut g_y = poisoned::<T>(dev, rows * e);
    let mut g_h = dev.upload(&h).expect("upload");
    mamba_scan_step_fwd(
        dev,
        &mut g_y,
        &mut g_h,
        &ScanStepInputs {
            x_dbl: &up::<T>(dev, &x_dbl),
            u: &up::<T>(dev, &u),
            z: &g_xz.slice(e..),
            z_stride: 2 * e,
            dt_w: &up::<T>(dev, &dt_w),
            dt_b: &up::<T>(dev, &dt_b),
            a_log: &up::<T>(dev, &a_log),
            d_skip: &up::<T>(dev, &d_skip),
        },
        dims,
        r,
    )
    .expect("mamba_scan_step_fwd");
    let shape = format!("rows {rows} E {e} N {n} R {r}");
    check(
        "mamba_scan_step_fwd y",
        T::SUFFIX,
        &shape,
        &down(dev, &g_y),
        &want_y,
        tol::<T>(),
    );
    check(
        "mamba_scan_step_fwd state",
        T::SUFFIX,
        &shape,
        &dev.download(&g_h).expect("download"),
        &want_h,
        tol::<T>(),
    );
}

#[test]
fn mamba_scan_step_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("mamba_scan_step_fwd");
    for rows in 1..=4 {
        let r = rows as u64;
        scan_step_case::<f32>(dev, rows, 320, 16, 20, s + r);
        scan_step_case::<bf16>(dev, rows, 4608, 16, 144, s + 10 + r);
        scan_step_case::<bf16>(dev, rows, 64, 8, 2, s + 20 + r);
        scan_step_case::<f32>(dev, rows, 50, 4, 200, s + 30 + r);
    }
}

#[test]
fn gemv_bad_shapes_are_typed_errors() {
    let Some(dev) = device() else { return };
    let w = dev.zeros::<f32>(4 * 8).expect("alloc");
    let inp = dev.zeros::<f32>(5 * 8).expect("alloc");
    let mut out = dev.zeros::<f32>(5 * 4).expect("alloc");
    let dims = |rows| LinearDims {
        rows,
        in_features: 8,
        out_features: 4,
    };
    // Five rows: more than the GEMV kernels take.
    let err = gemv_fwd(
        dev,
        GemvOut::Elem {
            out: &mut out,
            stride: 4,
        },
        GemvInput::Rows {
            inp: &inp,
            stride: 8,
        },
        &w,
        dims(5),
    )
    .unwrap_err();
    assert!(matches!(err, CudaError::Unsupported { .. }), "{err}");
    // An output too short for its rows.
    let mut short = dev.zeros::<f32>(7).expect("alloc");
    let err = gemv_fwd(
        dev,
        GemvOut::Elem {
            out: &mut short,
            stride: 4,
        },
        GemvInput::Rows {
            inp: &inp,
            stride: 8,
        },
        &w,
        dims(2),
    )
    .unwrap_err();
    assert!(matches!(err, CudaError::Unsupported { .. }), "{err}");
}
