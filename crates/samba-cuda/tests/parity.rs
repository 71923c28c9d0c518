//! Every GPU primitive against its CPU twin in samba-cpu, on fresh random inputs (the seed is
//! printed), with every output poisoned (NaN) before the kernel runs so an element it fails to
//! write shows up. f32 storage must match within 1e-5, bf16 storage (inputs rounded to bf16,
//! the CPU run on the same rounded values) within 1e-2. Outputs kept in f32 whatever the storage
//! (rstd, lse, loss, the scan state) are held to 1e-5 in both.
//!
//! Error measure: max_i |gpu_i - cpu_i| / max_i |cpu_i| (relative to the output's scale);
//! any NaN is an error of infinity.
//!
//! Without a CUDA device every test prints a note and returns, so `cargo test` passes on
//! machines without a GPU. Each check prints one `PARITY` line that scripts/gpu-check collects.

use half::bf16;
use samba_cpu::ops::attention::QkvDims;
use samba_cpu::ops::matmul::LinearDims;
use samba_cpu::ops::rope::RopeTable;
use samba_cpu::ops::selective_scan::ScanDims;
use samba_cpu::{ops as cpu, testing::random_vec};
use samba_cuda::ops::rope::DeviceRopeTable;
use samba_cuda::ops::selective_scan::ScanBuffers;
use samba_cuda::{cuda_available, ops as gpu, CudaDevice, CudaError, Elem};

mod common;
use common::*;

// ---------------------------------------------------------------------------------------------

fn rmsnorm_case<T: Elem>(dev: &CudaDevice, rows: usize, dim: usize, s: u64) {
    let x = rounded::<T>(&random_vec(rows * dim, s, 2.0));
    let w: Vec<f32> = rounded::<T>(
        &random_vec(dim, s + 1, 0.5)
            .iter()
            .map(|v| v + 1.0)
            .collect::<Vec<_>>(),
    );
    let (mut out, mut rstd) = (vec![0.0; rows * dim], vec![0.0; rows]);
    cpu::rmsnorm::rmsnorm_fwd(&mut out, &mut rstd, &x, &w, 1e-5);
    let (mut g_out, mut g_rstd) = (poisoned::<T>(dev, rows * dim), poisoned::<f32>(dev, rows));
    gpu::rmsnorm::rmsnorm_fwd(
        dev,
        &mut g_out,
        &mut g_rstd,
        &up::<T>(dev, &x),
        &up::<T>(dev, &w),
        1e-5,
    )
    .expect("rmsnorm_fwd");
    let shape = format!("rows {rows} dim {dim}");
    check(
        "rmsnorm_fwd",
        T::SUFFIX,
        &shape,
        &down(dev, &g_out),
        &out,
        tol::<T>(),
    );
    check(
        "rmsnorm_fwd rstd",
        T::SUFFIX,
        &shape,
        &down(dev, &g_rstd),
        &rstd,
        F32_TOL,
    );
}

#[test]
fn rmsnorm_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("rmsnorm_fwd");
    rmsnorm_case::<f32>(dev, 64, 1536, s);
    rmsnorm_case::<f32>(dev, 7, 1000, s + 10);
    rmsnorm_case::<bf16>(dev, 64, 2304, s + 20);
}

fn swiglu_case<T: Elem>(dev: &CudaDevice, n: usize, s: u64) {
    let gate = rounded::<T>(&random_vec(n, s, 4.0));
    let upv = rounded::<T>(&random_vec(n, s + 1, 2.0));
    let mut act = vec![0.0; n];
    cpu::swiglu::swiglu_fwd(&mut act, &gate, &upv);
    let mut g_act = poisoned::<T>(dev, n);
    gpu::swiglu::swiglu_fwd(dev, &mut g_act, &up::<T>(dev, &gate), &up::<T>(dev, &upv))
        .expect("swiglu_fwd");
    check(
        "swiglu_fwd",
        T::SUFFIX,
        &format!("n {n}"),
        &down(dev, &g_act),
        &act,
        tol::<T>(),
    );
}

#[test]
fn swiglu_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("swiglu_fwd");
    swiglu_case::<f32>(dev, 33 * 4096 + 5, s);
    swiglu_case::<bf16>(dev, 33 * 4096 + 5, s + 10);
}

fn embedding_case<T: Elem>(dev: &CudaDevice, vocab: usize, dim: usize, rows: usize, s: u64) {
    let wte = rounded::<T>(&random_vec(vocab * dim, s, 0.1));
    let tokens: Vec<u32> = random_vec(rows, s + 1, 1.0)
        .iter()
        .map(|v| (((v + 1.0) * 0.5 * vocab as f32) as u32).min(vocab as u32 - 1))
        .collect();
    let mut out = vec![0.0; rows * dim];
    cpu::embedding::embedding_fwd(&mut out, &tokens, &wte, dim);
    let mut g_out = poisoned::<T>(dev, rows * dim);
    let g_tokens = dev.upload(&tokens).expect("upload tokens");
    gpu::embedding::embedding_fwd(dev, &mut g_out, &g_tokens, &up::<T>(dev, &wte), dim)
        .expect("embedding_fwd");
    let shape = format!("vocab {vocab} dim {dim} rows {rows}");
    // A gather: exact.
    check(
        "embedding_fwd",
        T::SUFFIX,
        &shape,
        &down(dev, &g_out),
        &out,
        0.0,
    );
}

#[test]
fn embedding_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("embedding_fwd");
    embedding_case::<f32>(dev, 1000, 200, 77, s);
    embedding_case::<bf16>(dev, 32000, 64, 300, s + 10);
}

fn rope_case<T: Elem>(dev: &CudaDevice, dims: QkvDims, start: usize, s: u64) {
    let n = dims.batch * dims.seq * dims.qkv_dim();
    let qkv = rounded::<T>(&random_vec(n, s, 1.0));
    let table = RopeTable::new(10000.0, dims.head_dim, start, dims.seq);
    let mut cpu_qkv = qkv.clone();
    cpu::rope::rope_fwd(&mut cpu_qkv, &table, dims);
    let g_table = DeviceRopeTable::upload(dev, &table).expect("upload table");
    let mut g_qkv = up::<T>(dev, &qkv);
    gpu::rope::rope_fwd(dev, &mut g_qkv, &g_table, dims).expect("rope_fwd");
    let shape = format!(
        "b{} s{} h{}/{} hd{} from {start}",
        dims.batch, dims.seq, dims.heads, dims.kv_heads, dims.head_dim
    );
    check(
        "rope_fwd",
        T::SUFFIX,
        &shape,
        &down(dev, &g_qkv),
        &cpu_qkv,
        tol::<T>(),
    );
}

#[test]
fn rope_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("rope_fwd");
    let d = |batch, seq, heads, kv_heads, head_dim| QkvDims {
        batch,
        seq,
        heads,
        kv_heads,
        head_dim,
    };
    rope_case::<f32>(dev, d(2, 37, 6, 2, 64), 0, s);
    rope_case::<f32>(dev, d(1, 100, 4, 4, 128), 5000, s + 10);
    rope_case::<bf16>(dev, d(2, 64, 12, 12, 128), 0, s + 20);
}

fn cross_entropy_case<T: Elem>(dev: &CudaDevice, rows: usize, vocab: usize, s: u64) {
    let logits = rounded::<T>(&random_vec(rows * vocab, s, 4.0));
    let targets: Vec<u32> = (0..rows)
        .map(|i| ((i * 7919 + s as usize) % vocab) as u32)
        .collect();
    let (mut loss, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    cpu::cross_entropy::cross_entropy_fwd(&mut loss, &mut lse, &logits, &targets, vocab);
    let (mut g_loss, mut g_lse) = (poisoned::<f32>(dev, rows), poisoned::<f32>(dev, rows));
    let g_targets = dev.upload(&targets).expect("upload targets");
    gpu::cross_entropy::cross_entropy_fwd(
        dev,
        &mut g_loss,
        &mut g_lse,
        &up::<T>(dev, &logits),
        &g_targets,
        vocab,
    )
    .expect("cross_entropy_fwd");
    let shape = format!("rows {rows} vocab {vocab}");
    // f32 arithmetic in both storages: only the inputs were rounded, so 1e-5 holds for bf16 too.
    check(
        "cross_entropy_fwd loss",
        T::SUFFIX,
        &shape,
        &down(dev, &g_loss),
        &loss,
        F32_TOL,
    );
    check(
        "cross_entropy_fwd lse",
        T::SUFFIX,
        &shape,
        &down(dev, &g_lse),
        &lse,
        F32_TOL,
    );
}

#[test]
fn cross_entropy_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("cross_entropy_fwd");
    cross_entropy_case::<f32>(dev, 16, 32000, s);
    cross_entropy_case::<f32>(dev, 5, 11, s + 10);
    cross_entropy_case::<bf16>(dev, 16, 50304, s + 20);
}

fn linear_case<T: Elem>(dev: &CudaDevice, dims: LinearDims, s: u64)
where
    cudarc::cublas::CudaBlas: cudarc::cublas::Gemm<T>,
{
    let inp = rounded::<T>(&random_vec(dims.rows * dims.in_features, s, 1.0));
    let w = rounded::<T>(&random_vec(
        dims.out_features * dims.in_features,
        s + 1,
        0.1,
    ));
    let mut out = vec![0.0; dims.rows * dims.out_features];
    cpu::matmul::linear_fwd(&mut out, &inp, &w, dims);
    let mut g_out = poisoned::<T>(dev, out.len());
    gpu::matmul::linear_fwd(
        dev,
        &mut g_out,
        &up::<T>(dev, &inp),
        &up::<T>(dev, &w),
        dims,
    )
    .expect("linear_fwd");
    let shape = format!(
        "rows {} in {} out {}",
        dims.rows, dims.in_features, dims.out_features
    );
    check(
        "linear_fwd (cuBLAS)",
        T::SUFFIX,
        &shape,
        &down(dev, &g_out),
        &out,
        tol::<T>(),
    );
}

#[test]
fn linear_fwd_matches_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("linear_fwd");
    let d = |rows, in_features, out_features| LinearDims {
        rows,
        in_features,
        out_features,
    };
    linear_case::<f32>(dev, d(77, 300, 130), s);
    linear_case::<f32>(dev, d(256, 1536, 4608), s + 10);
    linear_case::<bf16>(dev, d(256, 1536, 4608), s + 20);
}

#[test]
fn bad_shapes_are_typed_errors_not_panics() {
    let Some(dev) = device() else { return };
    let mut out = dev.zeros::<f32>(10).expect("alloc");
    let mut rstd = dev.zeros::<f32>(2).expect("alloc");
    let x = dev.zeros::<f32>(12).expect("alloc");
    let w = dev.zeros::<f32>(5).expect("alloc");
    let err = gpu::rmsnorm::rmsnorm_fwd(dev, &mut out, &mut rstd, &x, &w, 1e-5).unwrap_err();
    assert!(
        matches!(
            err,
            CudaError::Shape {
                what: "x",
                expected: 10,
                found: 12,
                ..
            }
        ),
        "{err}"
    );
    let bufs_src = dev.zeros::<f32>(8).expect("alloc");
    let v = || bufs_src.as_view();
    let bufs = ScanBuffers {
        u: v(),
        delta_raw: v(),
        delta_bias: v(),
        a_log: v(),
        b: v(),
        c: v(),
        d_skip: v(),
        z: v(),
    };
    let dims = ScanDims {
        batch: 1,
        seq: 1,
        d_inner: 8,
        d_state: 3,
    };
    let mut o = dev.zeros::<f32>(8).expect("alloc");
    let err =
        gpu::selective_scan::selective_scan_fwd(dev, &mut o, &bufs, dims, None, None).unwrap_err();
    assert!(matches!(err, CudaError::Unsupported { .. }), "{err}");
}

#[test]
fn opening_a_missing_device_is_an_error_not_a_panic() {
    match CudaDevice::open(1000) {
        Err(CudaError::NoDriver) => assert!(!cuda_available()),
        Err(CudaError::NoDevice { ordinal: 1000, .. }) => {}
        other => panic!("expected NoDriver or NoDevice, got {other:?}"),
    }
}

#[test]
fn kernels_load_and_the_disk_cache_is_used() {
    let Some(dev) = device() else { return };
    let t0 = std::time::Instant::now();
    let first = dev.load_all_kernels().expect("load every kernel");
    let t1 = std::time::Instant::now();
    // A second device object has no loaded modules: it must find every file in the disk cache.
    let again = CudaDevice::open(dev.ordinal()).expect("open again");
    let second = again.load_all_kernels().expect("load again");
    let t2 = std::time::Instant::now();
    let cached = |v: &[(&str, bool)]| v.iter().filter(|(_, c)| *c).count();
    println!(
        "kernel-load first: {} files ({} from cache) in {:.0} ms; second: {} from cache in {:.0} ms; cache {:?}",
        first.len(),
        cached(&first),
        (t1 - t0).as_secs_f64() * 1e3,
        cached(&second),
        (t2 - t1).as_secs_f64() * 1e3,
        samba_cuda::compile::cache_dir()
    );
    assert_eq!(
        cached(&second),
        second.len(),
        "every file from the cache the second time"
    );
}

/// The dense layers of the model: strided input and output, T or f32 output, accumulating into
/// f32 (the residual stream); rows <= 4 take the GEMV kernel, more take cuBLAS.
fn dense_case<T: Elem>(dev: &CudaDevice, rows: usize, in_f: usize, out_f: usize, s: u64) {
    let (inp_stride, out_stride) = (in_f + 8, out_f + 3);
    let dims = LinearDims {
        rows,
        in_features: in_f,
        out_features: out_f,
    };
    let inp_wide = rounded::<T>(&random_vec(rows * inp_stride, s, 1.0));
    let w = rounded::<T>(&random_vec(out_f * in_f, s + 1, 0.1));
    let base = random_vec(rows * out_stride, s + 2, 1.0);
    let inp: Vec<f32> = inp_wide
        .chunks(inp_stride)
        .flat_map(|r| r[..in_f].to_vec())
        .collect();
    let mut prod = vec![0.0; rows * out_f];
    cpu::matmul::linear_fwd(&mut prod, &inp, &w, dims);
    let (g_inp, g_w) = (up::<T>(dev, &inp_wide), up::<T>(dev, &w));
    let shape = format!("rows {rows} in {in_f} out {out_f} strided");
    let pick = |v: &[f32]| -> Vec<f32> {
        v.chunks(out_stride)
            .flat_map(|r| r[..out_f].to_vec())
            .collect()
    };
    // T output
    let mut g_out = poisoned::<T>(dev, rows * out_stride);
    gpu::matmul::linear_fwd_strided(dev, &mut g_out, out_stride, &g_inp, inp_stride, &g_w, dims)
        .expect("linear_fwd_strided");
    check(
        "linear_fwd_strided",
        T::SUFFIX,
        &shape,
        &pick(&down(dev, &g_out)),
        &prod,
        tol::<T>(),
    );
    // f32 output, added to what is there
    let mut g_acc = dev.upload(&base).expect("upload");
    gpu::matmul::linear_fwd_into_f32(
        dev, &mut g_acc, out_stride, &g_inp, inp_stride, &g_w, dims, true,
    )
    .expect("linear_fwd_into_f32");
    let want: Vec<f32> = pick(&base).iter().zip(&prod).map(|(a, b)| a + b).collect();
    check(
        "linear_fwd_into_f32 +=",
        T::SUFFIX,
        &shape,
        &pick(&dev.download(&g_acc).expect("download")),
        &want,
        if T::SUFFIX == "f32" { F32_TOL } else { 1e-3 },
    );
}

#[test]
fn dense_layers_match_cpu() {
    let Some(dev) = device() else { return };
    let s = seed("dense layers");
    for rows in [1, 2, 4, 5] {
        dense_case::<f32>(dev, rows, 256, 77, s + rows as u64);
        dense_case::<bf16>(dev, rows, 2304, 600, s + 10 + rows as u64);
    }
    dense_case::<bf16>(dev, 3, 144, 4608, s + 20);
    dense_case::<f32>(dev, 64, 104, 300, s + 30);
}
