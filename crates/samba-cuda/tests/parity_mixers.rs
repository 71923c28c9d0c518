//! The mixers' primitives on the GPU against their CPU twins: the causal conv and the
//! selective scan of Mamba (with their recurrent states, whole and in chunks) and the
//! sliding-window / full attention. Same rules as tests/parity.rs: fresh seeds, poisoned
//! outputs, f32 within 1e-5, bf16 within 1e-2; skipped without a GPU.

use half::bf16;
use samba_cpu::ops::attention::QkvDims;
use samba_cpu::ops::causal_conv::ConvDims;
use samba_cpu::ops::selective_scan::{ScanDims, ScanInputs};
use samba_cpu::{ops as cpu, testing::random_vec};
use samba_cuda::ops::selective_scan::ScanBuffers;
use samba_cuda::{ops as gpu, CudaDevice, Elem};

mod common;
use common::*;

#[allow(clippy::too_many_arguments)]
fn conv_case<T: Elem>(dev: &CudaDevice, dims: ConvDims, with_state: bool, s: u64) {
    let n = dims.batch * dims.seq * dims.channels;
    let x = rounded::<T>(&random_vec(n, s, 1.0));
    let w = rounded::<T>(&random_vec(dims.channels * dims.kernel, s + 1, 0.5));
    let bias = rounded::<T>(&random_vec(dims.channels, s + 2, 0.5));
    let st_in = rounded::<T>(&random_vec(dims.state_len(), s + 3, 1.0));
    let (mut u, mut st_out) = (vec![0.0; n], vec![0.0; dims.state_len()]);
    cpu::causal_conv::causal_conv1d_silu_fwd(
        &mut u,
        &x,
        &w,
        &bias,
        dims,
        with_state.then_some(&st_in[..]),
        Some(&mut st_out),
    );
    let mut g_u = poisoned::<T>(dev, n);
    let mut g_st_out = poisoned::<T>(dev, dims.state_len());
    let g_st_in = up::<T>(dev, &st_in);
    gpu::causal_conv::causal_conv1d_silu_fwd(
        dev,
        &mut g_u,
        &up::<T>(dev, &x),
        &up::<T>(dev, &w),
        &up::<T>(dev, &bias),
        dims,
        if with_state { Some(&g_st_in) } else { None },
        Some(&mut g_st_out),
    )
    .expect("causal_conv1d_silu_fwd");
    let shape = format!(
        "b{} s{} ch{} k{}{}",
        dims.batch,
        dims.seq,
        dims.channels,
        dims.kernel,
        if with_state { " +state" } else { "" }
    );
    check(
        "causal_conv1d_silu_fwd",
        T::SUFFIX,
        &shape,
        &down(dev, &g_u),
        &u,
        tol::<T>(),
    );
    check(
        "causal_conv1d state_out",
        T::SUFFIX,
        &shape,
        &down(dev, &g_st_out),
        &st_out,
        0.0,
    );
}

#[test]
fn causal_conv1d_silu_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("causal_conv1d_silu_fwd");
    let d = |batch, seq, channels, kernel| ConvDims {
        batch,
        seq,
        channels,
        kernel,
    };
    conv_case::<f32>(dev, d(2, 50, 200, 4), false, s);
    conv_case::<f32>(dev, d(3, 20, 96, 4), true, s + 10);
    conv_case::<f32>(dev, d(2, 2, 33, 4), true, s + 20); // seq < kernel - 1: state from state_in
    conv_case::<bf16>(dev, d(2, 64, 3072, 4), true, s + 30);
    // Several tiles of 64 steps per sequence, the last one partial; kernel widths 2 and 3.
    conv_case::<f32>(dev, d(2, 300, 130, 4), true, s + 40);
    conv_case::<f32>(dev, d(1, 129, 64, 3), false, s + 50);
    conv_case::<bf16>(dev, d(3, 200, 257, 2), true, s + 60);
}

/// The in-place conv of short chunks (decoding) against the CPU with state_in -> state_out,
/// reading x from the first half of [x | other] rows (stride 2 channels).
fn conv_update_case<T: Elem>(dev: &CudaDevice, dims: ConvDims, s: u64) {
    let (n, ch) = (dims.batch * dims.seq * dims.channels, dims.channels);
    let x = rounded::<T>(&random_vec(n, s, 1.0));
    let w = rounded::<T>(&random_vec(ch * dims.kernel, s + 1, 0.5));
    let bias = rounded::<T>(&random_vec(ch, s + 2, 0.5));
    let st_in = rounded::<T>(&random_vec(dims.state_len(), s + 3, 1.0));
    let (mut u, mut st_out) = (vec![0.0; n], vec![0.0; dims.state_len()]);
    cpu::causal_conv::causal_conv1d_silu_fwd(
        &mut u,
        &x,
        &w,
        &bias,
        dims,
        Some(&st_in),
        Some(&mut st_out),
    );
    // x side by side with noise: rows [x | noise] of 2 * channels.
    let noise = random_vec(n, s + 4, 9.0);
    let wide: Vec<f32> = x
        .chunks(ch)
        .zip(noise.chunks(ch))
        .flat_map(|(a, b)| a.iter().chain(b).copied().collect::<Vec<_>>())
        .collect();
    let mut g_u = poisoned::<T>(dev, n);
    let mut g_state = up::<T>(dev, &st_in);
    gpu::causal_conv::causal_conv1d_update_fwd(
        dev,
        &mut g_u,
        &mut g_state,
        &up::<T>(dev, &wide),
        2 * ch,
        &up::<T>(dev, &w),
        &up::<T>(dev, &bias),
        dims,
    )
    .expect("causal_conv1d_update_fwd");
    let shape = format!(
        "b{} s{} ch{} k{} in place",
        dims.batch, dims.seq, ch, dims.kernel
    );
    check(
        "causal_conv1d_update_fwd",
        T::SUFFIX,
        &shape,
        &down(dev, &g_u),
        &u,
        tol::<T>(),
    );
    check(
        "causal_conv1d_update state",
        T::SUFFIX,
        &shape,
        &down(dev, &g_state),
        &st_out,
        0.0,
    );
}

#[test]
fn causal_conv1d_update_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("causal_conv1d_update_fwd");
    let d = |batch, seq, channels, kernel| ConvDims {
        batch,
        seq,
        channels,
        kernel,
    };
    conv_update_case::<f32>(dev, d(3, 1, 200, 4), s);
    conv_update_case::<f32>(dev, d(2, 5, 96, 4), s + 10);
    conv_update_case::<f32>(dev, d(1, 2, 33, 3), s + 20);
    conv_update_case::<bf16>(dev, d(4, 1, 3072, 4), s + 30);
}

struct ScanHost {
    u: Vec<f32>,
    delta_raw: Vec<f32>,
    delta_bias: Vec<f32>,
    a_log: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d_skip: Vec<f32>,
    z: Vec<f32>,
}

impl ScanHost {
    fn random<T: Elem>(d: ScanDims, s: u64) -> ScanHost {
        let lanes = d.batch * d.seq * d.d_inner;
        let states = d.batch * d.seq * d.d_state;
        // a_log as Mamba initialises it (ln(n + 1)) plus noise; delta around softplus(-2..1).
        let a_log: Vec<f32> = random_vec(d.d_inner * d.d_state, s + 3, 0.3)
            .iter()
            .enumerate()
            .map(|(i, v)| ((i % d.d_state) as f32 + 1.0).ln() + v)
            .collect();
        ScanHost {
            u: rounded::<T>(&random_vec(lanes, s, 1.0)),
            delta_raw: rounded::<T>(&random_vec(lanes, s + 1, 1.5)),
            delta_bias: rounded::<T>(
                &random_vec(d.d_inner, s + 2, 1.0)
                    .iter()
                    .map(|v| v - 1.0)
                    .collect::<Vec<_>>(),
            ),
            a_log: rounded::<T>(&a_log),
            b: rounded::<T>(&random_vec(states, s + 4, 1.0)),
            c: rounded::<T>(&random_vec(states, s + 5, 1.0)),
            d_skip: rounded::<T>(&random_vec(d.d_inner, s + 6, 1.0)),
            z: rounded::<T>(&random_vec(lanes, s + 7, 2.0)),
        }
    }

    /// The inputs on the device: u, delta_raw, delta_bias, a_log, B, C, D, z.
    fn upload<T: Elem>(&self, dev: &CudaDevice) -> [samba_cuda::Buffer<T>; 8] {
        [
            &self.u,
            &self.delta_raw,
            &self.delta_bias,
            &self.a_log,
            &self.b,
            &self.c,
            &self.d_skip,
            &self.z,
        ]
        .map(|v| up::<T>(dev, v))
    }

    fn inputs(&self) -> ScanInputs<'_> {
        ScanInputs {
            u: &self.u,
            delta_raw: &self.delta_raw,
            delta_bias: &self.delta_bias,
            a_log: &self.a_log,
            b: &self.b,
            c: &self.c,
            d_skip: &self.d_skip,
            z: &self.z,
        }
    }
}

/// Views of [`ScanHost::upload`]'s buffers as the scan's inputs.
fn buffers<T: Elem>(g: &[samba_cuda::Buffer<T>; 8]) -> ScanBuffers<'_, T> {
    ScanBuffers {
        u: g[0].as_view(),
        delta_raw: g[1].as_view(),
        delta_bias: g[2].as_view(),
        a_log: g[3].as_view(),
        b: g[4].as_view(),
        c: g[5].as_view(),
        d_skip: g[6].as_view(),
        z: g[7].as_view(),
    }
}

/// The scan over a whole sequence in one launch, and (batch 1) in two chunks with the state
/// carried on the device, both against one CPU pass.
fn scan_case<T: Elem>(dev: &CudaDevice, d: ScanDims, with_state: bool, s: u64) {
    let h = ScanHost::random::<T>(d, s);
    let st_in = random_vec(d.state_len(), s + 8, 1.0);
    let mut out = vec![0.0; d.batch * d.seq * d.d_inner];
    let mut st_out = vec![0.0; d.state_len()];
    cpu::selective_scan::selective_scan_fwd(
        &mut out,
        &h.inputs(),
        d,
        with_state.then_some(&st_in[..]),
        Some(&mut st_out),
    );

    let g = h.upload::<T>(dev);
    let bufs = buffers(&g);
    let g_st_in = dev.upload(&st_in).expect("upload state");
    let mut g_out = poisoned::<T>(dev, out.len());
    let mut g_st_out = poisoned::<f32>(dev, d.state_len());
    gpu::selective_scan::selective_scan_fwd(
        dev,
        &mut g_out,
        &bufs,
        d,
        if with_state { Some(&g_st_in) } else { None },
        Some(&mut g_st_out),
    )
    .expect("selective_scan_fwd");
    let shape = format!(
        "b{} s{} E{} N{}{}",
        d.batch,
        d.seq,
        d.d_inner,
        d.d_state,
        if with_state { " +state" } else { "" }
    );
    check(
        "selective_scan_fwd",
        T::SUFFIX,
        &shape,
        &down(dev, &g_out),
        &out,
        tol::<T>(),
    );
    check(
        "selective_scan state_out",
        "f32",
        &shape,
        &down(dev, &g_st_out),
        &st_out,
        F32_TOL,
    );

    if d.batch == 1 && d.seq > 1 {
        // Two chunks, [0, cut) and [cut, seq), the state carried through a device buffer.
        let cut = d.seq / 3 + 1;
        let (e, n) = (d.d_inner, d.d_state);
        let part = |lo: usize, hi: usize| ScanBuffers {
            u: g[0].slice(lo * e..hi * e),
            delta_raw: g[1].slice(lo * e..hi * e),
            delta_bias: g[2].as_view(),
            a_log: g[3].as_view(),
            b: g[4].slice(lo * n..hi * n),
            c: g[5].slice(lo * n..hi * n),
            d_skip: g[6].as_view(),
            z: g[7].slice(lo * e..hi * e),
        };
        let mut g_out2 = poisoned::<T>(dev, out.len());
        let mut mid = poisoned::<f32>(dev, d.state_len());
        let mut fin = poisoned::<f32>(dev, d.state_len());
        let d1 = ScanDims { seq: cut, ..d };
        let d2 = ScanDims {
            seq: d.seq - cut,
            ..d
        };
        {
            let (mut o1, mut o2) = g_out2.split_at_mut(cut * e);
            gpu::selective_scan::selective_scan_fwd(
                dev,
                &mut o1,
                &part(0, cut),
                d1,
                if with_state { Some(&g_st_in) } else { None },
                Some(&mut mid),
            )
            .expect("first chunk");
            gpu::selective_scan::selective_scan_fwd(
                dev,
                &mut o2,
                &part(cut, d.seq),
                d2,
                Some(&mid),
                Some(&mut fin),
            )
            .expect("second chunk");
        }
        check(
            "selective_scan chunks",
            T::SUFFIX,
            &shape,
            &down(dev, &g_out2),
            &out,
            tol::<T>(),
        );
        check(
            "selective_scan chunks h",
            "f32",
            &shape,
            &down(dev, &fin),
            &st_out,
            F32_TOL,
        );
    }
}

#[test]
fn selective_scan_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("selective_scan_fwd");
    let d = |batch, seq, d_inner, d_state| ScanDims {
        batch,
        seq,
        d_inner,
        d_state,
    };
    scan_case::<f32>(dev, d(2, 200, 96, 16), false, s);
    scan_case::<f32>(dev, d(1, 333, 200, 16), true, s + 10);
    scan_case::<f32>(dev, d(2, 50, 30, 4), true, s + 20);
    scan_case::<bf16>(dev, d(1, 256, 3072, 16), false, s + 30);
    // Enough sequences for the chunked kernel (1, 2 and 4 threads per channel).
    scan_case::<bf16>(dev, d(128, 5, 4608, 16), false, s + 40);
    scan_case::<f32>(dev, d(64, 21, 4608, 16), true, s + 50);
    scan_case::<bf16>(dev, d(40, 37, 4608, 16), true, s + 60);
}

/// Every way of spreading the scan over the GPU (`ScanPlan`) on the same inputs, with a state
/// in and out, against one CPU pass: one pass of the lanes or chunked kernel, and time splits
/// of several lengths (one staging chunk, a length that does not divide the sequence, one
/// longer than the sequence, the automatic one).
fn scan_plans_case<T: Elem>(dev: &CudaDevice, d: ScanDims, s: u64) {
    use gpu::selective_scan::{selective_scan_fwd_planned, ScanPlan, ScanStrides};
    let h = ScanHost::random::<T>(d, s);
    let st_in = random_vec(d.state_len(), s + 8, 1.0);
    let mut out = vec![0.0; d.batch * d.seq * d.d_inner];
    let mut st_out = vec![0.0; d.state_len()];
    cpu::selective_scan::selective_scan_fwd(
        &mut out,
        &h.inputs(),
        d,
        Some(&st_in[..]),
        Some(&mut st_out),
    );
    let g = h.upload::<T>(dev);
    let bufs = buffers(&g);
    let g_st_in = dev.upload(&st_in).expect("upload state");
    let mut plans = vec![ScanPlan::Lanes];
    let mut tpc = 1;
    while tpc <= d.d_state {
        plans.push(ScanPlan::Chunked { tpc });
        tpc *= 2;
    }
    for len in [16, 48, d.seq / 3 + 1, d.seq + 5] {
        plans.push(ScanPlan::with_split_len(d, len));
    }
    plans.extend(ScanPlan::split(d));
    for plan in plans {
        let mut g_out = poisoned::<T>(dev, out.len());
        let mut g_st_out = poisoned::<f32>(dev, d.state_len());
        selective_scan_fwd_planned(
            dev,
            &mut g_out,
            &bufs,
            d,
            ScanStrides::contiguous(d),
            Some(&g_st_in),
            Some(&mut g_st_out),
            plan,
        )
        .expect("selective_scan_fwd_planned");
        let shape = format!(
            "b{} s{} E{} N{} {plan:?}",
            d.batch, d.seq, d.d_inner, d.d_state
        );
        check(
            "selective_scan plan",
            T::SUFFIX,
            &shape,
            &down(dev, &g_out),
            &out,
            tol::<T>(),
        );
        check(
            "selective_scan plan state_out",
            "f32",
            &shape,
            &down(dev, &g_st_out),
            &st_out,
            F32_TOL,
        );
    }
}

#[test]
fn selective_scan_every_plan_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("selective_scan_plans");
    let d = |batch, seq, d_inner, d_state| ScanDims {
        batch,
        seq,
        d_inner,
        d_state,
    };
    scan_plans_case::<f32>(dev, d(1, 1000, 200, 16), s);
    scan_plans_case::<f32>(dev, d(3, 333, 96, 8), s + 10);
    scan_plans_case::<bf16>(dev, d(1, 700, 300, 16), s + 20);
    scan_plans_case::<bf16>(dev, d(2, 129, 130, 4), s + 30);
}

fn attention_case<T: Elem>(dev: &CudaDevice, dims: QkvDims, window: Option<usize>, s: u64) {
    let qkv = rounded::<T>(&random_vec(dims.batch * dims.seq * dims.qkv_dim(), s, 1.0));
    let mut out = vec![0.0; dims.batch * dims.seq * dims.out_dim()];
    let mut lse = vec![0.0; dims.batch * dims.heads * dims.seq];
    cpu::attention::attention_fwd(&mut out, &mut lse, &qkv, dims, window);
    let mut g_out = poisoned::<T>(dev, out.len());
    let mut g_lse = poisoned::<f32>(dev, lse.len());
    gpu::attention::attention_fwd(
        dev,
        &mut g_out,
        &mut g_lse,
        &up::<T>(dev, &qkv),
        dims,
        window,
    )
    .expect("attention_fwd");
    let shape = format!(
        "b{} s{} h{}/{} hd{} w{}",
        dims.batch,
        dims.seq,
        dims.heads,
        dims.kv_heads,
        dims.head_dim,
        window.map_or("full".to_string(), |w| w.to_string())
    );
    check(
        "attention_fwd",
        T::SUFFIX,
        &shape,
        &down(dev, &g_out),
        &out,
        tol::<T>(),
    );
    check(
        "attention_fwd lse",
        "f32",
        &shape,
        &down(dev, &g_lse),
        &lse,
        F32_TOL,
    );
}

#[test]
fn attention_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("attention_fwd");
    let d = |batch, seq, heads, kv_heads, head_dim| QkvDims {
        batch,
        seq,
        heads,
        kv_heads,
        head_dim,
    };
    attention_case::<f32>(dev, d(2, 300, 4, 2, 64), Some(100), s);
    attention_case::<f32>(dev, d(1, 257, 3, 3, 128), None, s + 10);
    attention_case::<f32>(dev, d(1, 90, 2, 1, 256), Some(40), s + 20);
    attention_case::<f32>(dev, d(1, 5, 2, 1, 8), Some(2), s + 30);
    attention_case::<f32>(dev, d(1, 600, 2, 2, 128), Some(129), s + 40);
    attention_case::<bf16>(dev, d(2, 512, 4, 4, 128), Some(200), s + 50);
    attention_case::<bf16>(dev, d(1, 300, 6, 1, 256), None, s + 60);
}
