//! Support for the parity tests: the shared device, fresh seeds, poisoned outputs, the error
//! measure and the PARITY lines that scripts/gpu-check collects; and for the benchmarks, lists
//! from the environment.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use samba_cuda::{cuda_available, Buffer, CudaDevice, Elem};

pub const F32_TOL: f64 = 1e-5;
pub const BF16_TOL: f64 = 1e-2;

/// The shared device, or None (with a note) on a machine without one.
pub fn device() -> Option<&'static Arc<CudaDevice>> {
    static DEV: OnceLock<Option<Arc<CudaDevice>>> = OnceLock::new();
    DEV.get_or_init(|| {
        if !cuda_available() {
            return None;
        }
        let dev = CudaDevice::open(0).expect("open CUDA device 0");
        eprintln!("device: {} ({})", dev.name(), dev.arch());
        Some(Arc::new(dev))
    })
    .as_ref()
    .or_else(|| {
        eprintln!("skipped: no CUDA device on this machine");
        None
    })
}

/// A fresh seed per run, printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("SAMBA_PARITY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {s} (replay with SAMBA_PARITY_SEED={s})");
    s
}

pub fn tol<T: Elem>() -> f64 {
    if T::SUFFIX == "f32" {
        F32_TOL
    } else {
        BF16_TOL
    }
}

/// The values as stored in T, back in f32 (the CPU's inputs for a bf16 run).
pub fn rounded<T: Elem>(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| T::from_f32(x).to_f32()).collect()
}

pub fn to_t<T: Elem>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x)).collect()
}

pub fn to_f32<T: Elem>(v: &[T]) -> Vec<f32> {
    v.iter().map(|&x| x.to_f32()).collect()
}

pub fn up<T: Elem>(dev: &CudaDevice, v: &[f32]) -> Buffer<T> {
    dev.upload(&to_t::<T>(v)).expect("upload")
}

/// An output buffer of n elements, poisoned with NaN.
pub fn poisoned<T: Elem>(dev: &CudaDevice, n: usize) -> Buffer<T> {
    let mut b = dev.zeros::<T>(n).expect("alloc");
    dev.fill(&mut b, T::from_f32(f32::NAN)).expect("poison");
    b
}

pub fn down<T: Elem>(dev: &CudaDevice, b: &Buffer<T>) -> Vec<f32> {
    to_f32(&dev.download(b).expect("download"))
}

/// max |gpu - cpu| / max |cpu|; infinite when the GPU left a NaN or the lengths differ.
pub fn rel_err(gpu: &[f32], cpu: &[f32]) -> f64 {
    if gpu.len() != cpu.len() || gpu.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let scale = cpu.iter().fold(0.0f64, |m, &c| m.max((c as f64).abs()));
    let diff = gpu
        .iter()
        .zip(cpu)
        .fold(0.0f64, |m, (&g, &c)| m.max((g as f64 - c as f64).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// Prints the PARITY line and fails the test above the tolerance.
pub fn check(name: &str, dtype: &str, shape: &str, gpu: &[f32], cpu: &[f32], tol: f64) {
    let err = report(name, dtype, shape, gpu, cpu, tol);
    assert!(
        err <= tol,
        "{name} ({dtype}, {shape}): relative error {err:e} > {tol:e}"
    );
}

fn report(name: &str, dtype: &str, shape: &str, gpu: &[f32], cpu: &[f32], tol: f64) -> f64 {
    let err = rel_err(gpu, cpu);
    let verdict = if err <= tol { "ok" } else { "FAIL" };
    println!(
        "PARITY {name:<24} {dtype:<5} {shape:<44} rel_err {err:9.2e}  tol {tol:.0e}  {verdict}"
    );
    err
}

thread_local! {
    /// Failed `expect` checks of the running test (each test runs on its own thread).
    static FAILED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// As [`check`], but a failure is only counted: the test goes on, so one run shows every
/// check; end the test with [`all_passed`].
pub fn expect(name: &str, dtype: &str, shape: &str, gpu: &[f32], cpu: &[f32], tol: f64) {
    if report(name, dtype, shape, gpu, cpu, tol) > tol {
        FAILED.with(|f| f.set(f.get() + 1));
    }
}

/// ||gpu - cpu||_2 / ||cpu||_2 (infinite on a NaN or a length mismatch).
pub fn rel_err_l2(gpu: &[f32], cpu: &[f32]) -> f64 {
    samba_cpu::testing::rel_l2(gpu, cpu)
}

/// As [`expect`] with the norm-wise measure ||gpu - cpu||_2 / ||cpu||_2 (shared/METHOD's
/// measure; the max-relative one is printed beside it): for whole-model bf16 outputs, where
/// bf16 rounding of every activation stage adds up over the stack.
pub fn expect_l2(name: &str, dtype: &str, shape: &str, gpu: &[f32], cpu: &[f32], tol: f64) {
    let err = rel_err_l2(gpu, cpu);
    let verdict = if err <= tol { "ok" } else { "FAIL" };
    println!(
        "PARITY {name:<24} {dtype:<5} {shape:<44} rel_l2  {err:9.2e}  tol {tol:.0e}  {verdict}  (max rel {:.2e})",
        rel_err(gpu, cpu)
    );
    if err > tol {
        FAILED.with(|f| f.set(f.get() + 1));
    }
}

/// Fails the test if any [`expect`] failed.
pub fn all_passed() {
    let n = FAILED.with(|f| f.get());
    assert_eq!(n, 0, "{n} checks failed (the FAIL lines above)");
}

/// A comma-separated list from the environment variable `key` (`default` when unset).
pub fn env_list(key: &str, default: &str) -> Vec<String> {
    std::env::var(key)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
