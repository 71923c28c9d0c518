//! The attention kernels of inference against the CPU: the tensor-core kernel (bf16, head_dim
//! 64 and 128) on whole sequences, both prefill kernels on a chunk that also reads a ring cache
//! (the CPU's `attention_cached_fwd`), and the decoding kernel (one token against its ring,
//! split over the keys, storing its key and value). Same rules as tests/parity.rs: fresh seeds,
//! poisoned outputs, f32 within 1e-5, bf16 within 1e-2; skipped without a GPU.

use half::bf16;
use samba_cpu::ops::attention::QkvDims;
use samba_cpu::ops::attention_cache::{attention_cached_fwd, KvCache};
use samba_cpu::{ops as cpu, testing::random_vec};
use samba_cuda::ops::attention::{
    attention_chunk_fwd, attention_decode_fwd, decode_splits, AttentionKernel, KvRing,
};
use samba_cuda::ops::kv_cache::kv_cache_write;
use samba_cuda::ops::StateOut;
use samba_cuda::{CudaDevice, Elem};

mod common;
use common::*;

fn shape_name(d: QkvDims, window: Option<usize>) -> String {
    format!(
        "b{} s{} h{}/{} hd{} w{}",
        d.batch,
        d.seq,
        d.heads,
        d.kv_heads,
        d.head_dim,
        window.map_or("full".to_string(), |w| w.to_string())
    )
}

fn whole_case(dev: &CudaDevice, dims: QkvDims, window: Option<usize>, s: u64) {
    let qkv = rounded::<bf16>(&random_vec(dims.batch * dims.seq * dims.qkv_dim(), s, 1.5));
    let mut out = vec![0.0; dims.batch * dims.seq * dims.out_dim()];
    let mut lse = vec![0.0; dims.batch * dims.heads * dims.seq];
    cpu::attention::attention_fwd(&mut out, &mut lse, &qkv, dims, window);
    let mut g_out = poisoned::<bf16>(dev, out.len());
    let mut g_lse = poisoned::<f32>(dev, lse.len());
    attention_chunk_fwd(
        dev,
        &mut g_out,
        Some(&mut g_lse as &mut dyn StateOut<f32>),
        &up::<bf16>(dev, &qkv),
        dims,
        window,
        None,
        AttentionKernel::TensorCore,
    )
    .expect("attention_mma_fwd");
    let shape = shape_name(dims, window);
    check(
        "attention_mma_fwd",
        "bf16",
        &shape,
        &down(dev, &g_out),
        &out,
        BF16_TOL,
    );
    check(
        "attention_mma_fwd lse",
        "f32",
        &shape,
        &down(dev, &g_lse),
        &lse,
        F32_TOL,
    );
}

#[test]
fn attention_mma_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("attention_mma_fwd");
    let d = |batch, seq, heads, kv_heads, head_dim| QkvDims {
        batch,
        seq,
        heads,
        kv_heads,
        head_dim,
    };
    whole_case(dev, d(2, 300, 4, 2, 64), Some(100), s);
    whole_case(dev, d(1, 257, 3, 3, 128), None, s + 10);
    whole_case(dev, d(2, 512, 4, 4, 128), Some(200), s + 20);
    whole_case(dev, d(1, 700, 6, 1, 64), None, s + 30);
    whole_case(dev, d(1, 65, 2, 2, 128), Some(64), s + 40);
    whole_case(dev, d(3, 130, 2, 1, 128), Some(1), s + 50);
}

/// A chunk of `chunk` tokens after `before` earlier ones held in the ring, both prefill kernels.
#[allow(clippy::too_many_arguments)]
fn chunk_case<T: Elem>(
    dev: &CudaDevice,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: Option<usize>,
    before: usize,
    chunk: usize,
    kernel: AttentionKernel,
    s: u64,
) {
    let full = QkvDims {
        batch: 1,
        seq: before + chunk,
        heads,
        kv_heads,
        head_dim,
    };
    let kv_dim = kv_heads * head_dim;
    let cap = window.map_or(before + chunk, |w| w - 1);
    // Per sequence: the CPU runs the earlier tokens, then the chunk, through its KvCache.
    let mut qkv_before = Vec::new();
    let mut qkv_chunk = Vec::new();
    let mut expected = Vec::new();
    for b in 0..batch {
        let qkv = rounded::<T>(&random_vec(full.seq * full.qkv_dim(), s + b as u64, 1.5));
        let (q1, q2) = qkv.split_at(before * full.qkv_dim());
        let mut cache = KvCache::new(kv_dim, cap);
        if before > 0 {
            let mut o = vec![0.0; before * full.out_dim()];
            attention_cached_fwd(
                &mut o,
                q1,
                &mut cache,
                QkvDims {
                    seq: before,
                    ..full
                },
                window,
            );
        }
        let mut o = vec![0.0; chunk * full.out_dim()];
        attention_cached_fwd(
            &mut o,
            q2,
            &mut cache,
            QkvDims { seq: chunk, ..full },
            window,
        );
        qkv_before.extend_from_slice(q1);
        qkv_chunk.extend_from_slice(q2);
        expected.extend(o);
    }
    // The GPU fills the rings with the earlier tokens (kv_cache_write), then runs the chunk.
    let mut k = poisoned::<T>(dev, (batch * cap * kv_dim).max(1));
    let mut v = poisoned::<T>(dev, (batch * cap * kv_dim).max(1));
    let ring = batch * cap * kv_dim;
    let zero = dev.upload(&vec![0i32; batch]).expect("upload");
    let pos = dev.upload(&vec![before as i32; batch]).expect("upload");
    {
        let (mut k, mut v) = (k.slice_mut(0..ring), v.slice_mut(0..ring));
        if before > 0 {
            kv_cache_write(
                dev,
                &mut k,
                &mut v,
                &up::<T>(dev, &qkv_before),
                &zero,
                QkvDims {
                    batch,
                    seq: before,
                    ..full
                },
                cap,
            )
            .expect("kv_cache_write");
        }
    }
    let dims = QkvDims {
        batch,
        seq: chunk,
        ..full
    };
    let mut g_out = poisoned::<T>(dev, expected.len());
    let (k_r, v_r) = (k.slice(0..ring), v.slice(0..ring));
    attention_chunk_fwd(
        dev,
        &mut g_out,
        None,
        &up::<T>(dev, &qkv_chunk),
        dims,
        window,
        Some(KvRing {
            k: &k_r,
            v: &v_r,
            pos: &pos,
            cap,
        }),
        kernel,
    )
    .expect("attention with a ring");
    let name = match kernel {
        AttentionKernel::TensorCore => "attention_mma + ring",
        _ => "attention_fwd + ring",
    };
    check(
        name,
        T::SUFFIX,
        &format!("{} +{before}", shape_name(dims, window)),
        &down(dev, &g_out),
        &expected,
        tol::<T>(),
    );
}

#[test]
fn attention_with_a_ring_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("attention + ring");
    let simt = AttentionKernel::Simt;
    let tc = AttentionKernel::TensorCore;
    chunk_case::<f32>(dev, 2, 4, 2, 64, Some(100), 150, 70, simt, s);
    chunk_case::<f32>(dev, 1, 3, 3, 32, None, 90, 40, simt, s + 10);
    chunk_case::<f32>(dev, 2, 2, 1, 8, Some(8), 13, 5, simt, s + 20);
    chunk_case::<bf16>(dev, 2, 4, 4, 128, Some(200), 333, 130, simt, s + 30);
    chunk_case::<bf16>(dev, 2, 4, 4, 128, Some(200), 333, 130, tc, s + 40);
    chunk_case::<bf16>(dev, 1, 4, 2, 64, None, 200, 100, tc, s + 50);
    chunk_case::<bf16>(dev, 2, 2, 2, 128, Some(70), 64, 64, tc, s + 60);
}

/// One decoding token after `before` tokens, through the split decoding kernel; the ring after
/// it against the CPU cache's contents.
#[allow(clippy::too_many_arguments)]
fn decode_case<T: Elem>(
    dev: &CudaDevice,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: Option<usize>,
    before: usize,
    s: u64,
) {
    let full = QkvDims {
        batch: 1,
        seq: before + 1,
        heads,
        kv_heads,
        head_dim,
    };
    let kv_dim = kv_heads * head_dim;
    let cap = window.map_or(before + 1, |w| w - 1);
    let mut qkv_before = Vec::new();
    let mut qkv_new = Vec::new();
    let mut expected = Vec::new();
    // The rings after the step: position p of sequence b at slot p % cap, for the last
    // min(before + 1, cap) positions (what the CPU cache holds), zeros elsewhere.
    let ring = batch * cap * kv_dim;
    let mut want_k = vec![0.0f32; ring];
    let mut want_v = vec![0.0f32; ring];
    for b in 0..batch {
        let qkv = rounded::<T>(&random_vec(full.seq * full.qkv_dim(), s + b as u64, 1.5));
        let (q1, q2) = qkv.split_at(before * full.qkv_dim());
        let mut cache = KvCache::new(kv_dim, cap);
        if before > 0 {
            let mut o = vec![0.0; before * full.out_dim()];
            attention_cached_fwd(
                &mut o,
                q1,
                &mut cache,
                QkvDims {
                    seq: before,
                    ..full
                },
                window,
            );
        }
        let mut o = vec![0.0; full.out_dim()];
        attention_cached_fwd(&mut o, q2, &mut cache, QkvDims { seq: 1, ..full }, window);
        qkv_before.extend_from_slice(q1);
        qkv_new.extend_from_slice(q2);
        expected.extend(o);
        let len = (before + 1).min(cap);
        assert_eq!(cache.len(), len);
        for p in before + 1 - len..=before {
            let row = &qkv[p * full.qkv_dim()..(p + 1) * full.qkv_dim()];
            for g in 0..kv_heads {
                let at = (b * cap + p % cap) * kv_dim + g * head_dim;
                want_k[at..at + head_dim].copy_from_slice(&row[full.k_col(g)..][..head_dim]);
                want_v[at..at + head_dim].copy_from_slice(&row[full.v_col(g)..][..head_dim]);
            }
        }
    }
    let mut k = dev.zeros::<T>(ring.max(1)).expect("alloc");
    let mut v = dev.zeros::<T>(ring.max(1)).expect("alloc");
    let zero = dev.upload(&vec![0i32; batch]).expect("upload");
    let pos = dev.upload(&vec![before as i32; batch]).expect("upload");
    let dims = QkvDims {
        batch,
        seq: 1,
        ..full
    };
    let n_split = decode_splits(batch, heads, cap);
    let mut part = poisoned::<f32>(dev, batch * heads * n_split * (head_dim + 2));
    let mut g_out = poisoned::<T>(dev, expected.len());
    // The count of finished blocks per (sequence, kv group): zeros before, zeros after.
    let mut done = dev.zeros::<u32>(batch * kv_heads).expect("alloc");
    {
        let (mut k, mut v) = (k.slice_mut(0..ring), v.slice_mut(0..ring));
        if before > 0 {
            kv_cache_write(
                dev,
                &mut k,
                &mut v,
                &up::<T>(dev, &qkv_before),
                &zero,
                QkvDims {
                    batch,
                    seq: before,
                    ..full
                },
                cap,
            )
            .expect("kv_cache_write");
        }
        attention_decode_fwd(
            dev,
            &mut g_out,
            &mut part,
            &mut done,
            &up::<T>(dev, &qkv_new),
            dims,
            window,
            &mut k,
            &mut v,
            &pos,
            cap,
            n_split,
        )
        .expect("attention_decode_fwd");
    }
    let shape = format!("{} +{before} split {n_split}", shape_name(dims, window));
    check(
        "attention_decode_fwd",
        T::SUFFIX,
        &shape,
        &down(dev, &g_out),
        &expected,
        tol::<T>(),
    );
    let left = dev.download(&done).expect("download");
    assert!(
        left.iter().all(|&c| c == 0),
        "attention_decode_fwd left its block counts at {left:?}, not zero"
    );
    // Keys then values of the rings, against the CPU cache's (copies: exact).
    if ring > 0 {
        let mut got = to_f32(&dev.download(&k.slice(0..ring)).expect("download"));
        got.extend(to_f32(&dev.download(&v.slice(0..ring)).expect("download")));
        want_k.extend(want_v);
        check(
            "attention_decode ring",
            T::SUFFIX,
            &shape,
            &got,
            &want_k,
            0.0,
        );
    }
}

#[test]
fn attention_decode_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("attention_decode_fwd");
    decode_case::<f32>(dev, 1, 4, 2, 64, Some(100), 150, s);
    decode_case::<f32>(dev, 3, 2, 2, 128, None, 300, s + 10);
    decode_case::<f32>(dev, 2, 4, 2, 8, Some(8), 20, s + 20);
    decode_case::<f32>(dev, 1, 2, 1, 256, Some(64), 10, s + 30);
    decode_case::<bf16>(dev, 1, 18, 18, 128, Some(2048), 3000, s + 40);
    decode_case::<bf16>(dev, 4, 6, 2, 64, None, 500, s + 50);
    decode_case::<bf16>(dev, 2, 4, 4, 8, Some(8), 3, s + 60);
    decode_case::<bf16>(dev, 2, 2, 2, 256, Some(1), 5, s + 70);
    decode_case::<bf16>(dev, 1, 2, 2, 128, None, 0, s + 80);
}
