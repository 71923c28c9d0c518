//! The ceilings of the GPU a benchmark runs on, measured there: the device-to-device copy
//! bandwidth (a decoding step, which streams every weight once, is held to it) and the bf16 GEMM
//! rate through the crate's own cuBLAS path (prefill's FLOPs are held to it). The benchmarks'
//! floors are work / ceiling (`bench.rs`), so a fraction of the floor means the same on an H100
//! as on an H200.
//!
//! One H200 measured 4.3 TB/s and 790 TFLOP/s (shared/DESIGN.md, "Performance floors on one
//! H200"; the figures in docs/gpu.md were taken against them). They stay here as
//! [`H200_COPY_BANDWIDTH`] and [`H200_BF16_GEMM_FLOPS`], a reference, not the floor.
//!
//! The measurement takes well under a second and frees what it allocated:
//! - copy: 1 GiB (less when a quarter of the free memory is less) copied device to device, one
//!   untimed copy, then the best of 5 runs of 8 copies; read + write bytes are counted, as in
//!   the H200 figure;
//! - GEMM: [n, n] @ [n, n]^T with n = 8192 through `linear_fwd_strided` (cublasGemmEx, bf16
//!   operands and output, f32 accumulation: the model's dense layers), operands of random-looking
//!   values (a GPU runs zeros faster: less power, higher clocks), two untimed GEMMs (cuBLAS picks
//!   its algorithm), then the best of 5 runs of 4 GEMMs; 2 n^3 FLOPs each.

use std::fmt;
use std::time::Instant;

use half::bf16;
use samba_cpu::ops::matmul::LinearDims;
use serde::Serialize;

use crate::error::{driver, CudaError, Result};
use crate::ops::matmul::linear_fwd_strided;
use crate::CudaDevice;

/// Device-to-device copy bandwidth of one H200, bytes/s (read + write), measured on that
/// machine kind: the reference the docs cite.
pub const H200_COPY_BANDWIDTH: f64 = 4.3e12;
/// bf16 GEMM rate of one H200 (cuBLAS, 8192^3), FLOP/s, measured on that machine kind: the
/// reference the docs cite.
pub const H200_BF16_GEMM_FLOPS: f64 = 790e12;

/// Bytes of each of the two copy buffers, at most.
const COPY_BYTES: usize = 1 << 30;
/// Below this the copy would measure the L2 cache (50 MB on an H100 or H200), not the memory.
const MIN_COPY_BYTES: usize = 256 << 20;
const COPIES_PER_RUN: usize = 8;
/// The GEMM's size: [GEMM_N, GEMM_N] @ [GEMM_N, GEMM_N]^T.
const GEMM_N: usize = 8192;
const GEMMS_PER_RUN: usize = 4;
const WARM_UP_GEMMS: usize = 2;
/// Timed runs of each measurement; the best (shortest) one counts.
const RUNS: usize = 5;

/// Where a set of ceilings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CeilingSource {
    /// Measured on the device by this process ([`Ceilings::measure`]).
    Measured,
    /// The H200's figures ([`H200_COPY_BANDWIDTH`], [`H200_BF16_GEMM_FLOPS`]), not measured here.
    H200Reference,
}

impl fmt::Display for CeilingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CeilingSource::Measured => "measured now",
            CeilingSource::H200Reference => "H200 reference, not measured here",
        })
    }
}

/// The two rates a benchmark's floor divides its work by, and the device they belong to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ceilings {
    /// The device's name, e.g. "NVIDIA H200".
    pub device: String,
    /// Device-to-device copy bandwidth, bytes/s, counting every byte read and every byte written.
    pub copy_bytes_per_second: f64,
    /// bf16 GEMM rate (cuBLAS, f32 accumulation), FLOP/s (2 per multiply-add).
    pub bf16_gemm_flops_per_second: f64,
    pub source: CeilingSource,
}

impl Ceilings {
    /// The H200's figures, for reference (not this machine's unless it is an H200).
    pub fn h200_reference() -> Ceilings {
        Ceilings {
            device: "NVIDIA H200".to_string(),
            copy_bytes_per_second: H200_COPY_BANDWIDTH,
            bf16_gemm_flops_per_second: H200_BF16_GEMM_FLOPS,
            source: CeilingSource::H200Reference,
        }
    }

    /// Measures the copy bandwidth and the bf16 GEMM rate of `dev` (module doc: how). Every
    /// buffer it allocates is freed before it returns. Run it before a model is on the device,
    /// where the memory is free, and once per process: it takes a few hundred milliseconds.
    pub fn measure(dev: &CudaDevice) -> Result<Ceilings> {
        let copy_bytes_per_second = measure_copy_bandwidth(dev)?;
        let bf16_gemm_flops_per_second = measure_bf16_gemm(dev)?;
        // The buffers were dropped (freed on the stream); waiting returns them to the driver.
        dev.synchronize()?;
        Ok(Ceilings {
            device: dev.name().to_string(),
            copy_bytes_per_second,
            bf16_gemm_flops_per_second,
            source: CeilingSource::Measured,
        })
    }

    /// The fewest seconds `flops` of bf16 GEMM work can take at this rate.
    pub fn gemm_seconds(&self, flops: f64) -> f64 {
        flops / self.bf16_gemm_flops_per_second
    }

    /// The fewest seconds reading `bytes` can take at the copy bandwidth.
    pub fn copy_seconds(&self, bytes: f64) -> f64 {
        bytes / self.copy_bytes_per_second
    }

    /// The copy bandwidth in TB/s (10^12 bytes/s), as the report lines print it.
    pub fn copy_tb_per_second(&self) -> f64 {
        self.copy_bytes_per_second / 1e12
    }

    /// The GEMM rate in TFLOP/s, as the report lines print it.
    pub fn gemm_tflops(&self) -> f64 {
        self.bf16_gemm_flops_per_second / 1e12
    }

    /// "ceilings of NVIDIA H200 (measured now): 4.30 TB/s copy, 790 TFLOP/s bf16 GEMM".
    pub fn line(&self) -> String {
        format!(
            "ceilings of {} ({}): {:.2} TB/s copy, {:.0} TFLOP/s bf16 GEMM",
            self.device,
            self.source,
            self.copy_tb_per_second(),
            self.gemm_tflops()
        )
    }
}

/// Bytes of each copy buffer given `free` bytes of device memory: 1 GiB, or a quarter of the
/// free memory (whole MiB) when that is less (source and destination take half, the rest stays
/// for cuBLAS and whatever else is there); None below `MIN_COPY_BYTES`.
fn copy_buffer_bytes(free: usize) -> Option<usize> {
    let bytes = COPY_BYTES.min(free / 4 / (1 << 20) * (1 << 20));
    (bytes >= MIN_COPY_BYTES).then_some(bytes)
}

/// Bytes/s of `copies` copies of `bytes` each in `seconds`: every byte is read and written.
fn copy_rate(bytes: usize, copies: usize, seconds: f64) -> f64 {
    2.0 * bytes as f64 * copies as f64 / seconds
}

/// FLOP/s of `gemms` [n, n] @ [n, n] GEMMs in `seconds`: n^3 multiply-adds each.
fn gemm_rate(n: usize, gemms: usize, seconds: f64) -> f64 {
    2.0 * (n as f64).powi(3) * gemms as f64 / seconds
}

/// `rate`, or an error when it is no rate (a zero or unreadable time).
fn checked_rate(what: &'static str, rate: f64) -> Result<f64> {
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(CudaError::Ceiling {
            what,
            reason: format!("the timing gave {rate} per second, not a rate"),
        })
    }
}

/// `op` run `warm_up` times untimed, then the shortest of RUNS timings of `per_run` calls, each
/// from an idle stream to the end of its work.
fn best_seconds(
    dev: &CudaDevice,
    warm_up: usize,
    per_run: usize,
    mut op: impl FnMut() -> Result<()>,
) -> Result<f64> {
    for _ in 0..warm_up {
        op()?;
    }
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        dev.synchronize()?;
        let t0 = Instant::now();
        for _ in 0..per_run {
            op()?;
        }
        dev.synchronize()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Copy bandwidth, bytes/s (read + write): device-to-device copies of one large buffer.
fn measure_copy_bandwidth(dev: &CudaDevice) -> Result<f64> {
    const WHAT: &str = "copy bandwidth";
    let (free, _) = dev.memory()?;
    let bytes = copy_buffer_bytes(free).ok_or_else(|| CudaError::Ceiling {
        what: WHAT,
        reason: format!(
            "{:.2} GB of device memory free; two buffers of at least {} MiB are needed",
            free as f64 / 1e9,
            MIN_COPY_BYTES >> 20
        ),
    })?;
    let src = dev.zeros::<u8>(bytes)?;
    let mut dst = dev.zeros::<u8>(bytes)?;
    let stream = dev.stream();
    let copy = || {
        stream
            .memcpy_dtod(&src, &mut dst)
            .map_err(driver(format!("copying {bytes} bytes device to device")))
    };
    let seconds = best_seconds(dev, 1, COPIES_PER_RUN, copy)?;
    checked_rate(WHAT, copy_rate(bytes, COPIES_PER_RUN, seconds))
}

/// `n` values in [-1, 1), the same on every call (a hash of the index: no zeros, no pattern a
/// GPU's power draw would notice).
fn gemm_operand(n: usize) -> Vec<bf16> {
    (0..n)
        .map(|i| {
            // lowbias32 (Chris Wellons' integer hash).
            let mut h = i as u32;
            h ^= h >> 16;
            h = h.wrapping_mul(0x7feb_352d);
            h ^= h >> 15;
            h = h.wrapping_mul(0x846c_a68b);
            h ^= h >> 16;
            bf16::from_f32((h >> 8) as f32 / (1u32 << 23) as f32 - 1.0)
        })
        .collect()
}

/// bf16 GEMM rate, FLOP/s: out [n, n] = a [n, n] @ a^T through the model's dense-layer path.
fn measure_bf16_gemm(dev: &CudaDevice) -> Result<f64> {
    const WHAT: &str = "bf16 GEMM rate";
    let n = GEMM_N;
    let bytes = n * n * std::mem::size_of::<bf16>();
    let (free, _) = dev.memory()?;
    // The operand, the output, and room for cuBLAS's workspace.
    if free < 2 * bytes + (64 << 20) {
        return Err(CudaError::Ceiling {
            what: WHAT,
            reason: format!(
                "{:.2} GB of device memory free; the {n}^3 GEMM needs {:.2} GB",
                free as f64 / 1e9,
                (2 * bytes + (64 << 20)) as f64 / 1e9
            ),
        });
    }
    // One operand as both inputs (inp = w): out = a @ a^T.
    let a = dev.upload(&gemm_operand(n * n))?;
    let mut out = dev.zeros::<bf16>(n * n)?;
    let dims = LinearDims {
        rows: n,
        in_features: n,
        out_features: n,
    };
    let gemm = || linear_fwd_strided(dev, &mut out, n, &a, n, &a, dims);
    let seconds = best_seconds(dev, WARM_UP_GEMMS, GEMMS_PER_RUN, gemm)?;
    checked_rate(WHAT, gemm_rate(n, GEMMS_PER_RUN, seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceilings(copy: f64, gemm: f64) -> Ceilings {
        Ceilings {
            device: "NVIDIA H100 80GB HBM3".to_string(),
            copy_bytes_per_second: copy,
            bf16_gemm_flops_per_second: gemm,
            source: CeilingSource::Measured,
        }
    }

    #[test]
    fn the_h200_reference_keeps_the_documented_figures() {
        let r = Ceilings::h200_reference();
        assert_eq!(r.copy_bytes_per_second, 4.3e12);
        assert_eq!(r.bf16_gemm_flops_per_second, 790e12);
        assert_eq!(
            r.line(),
            "ceilings of NVIDIA H200 (H200 reference, not measured here): 4.30 TB/s copy, 790 TFLOP/s bf16 GEMM"
        );
    }

    #[test]
    fn the_line_names_the_device_and_both_rates() {
        let c = ceilings(3.02e12, 712.4e12);
        assert_eq!(
            c.line(),
            "ceilings of NVIDIA H100 80GB HBM3 (measured now): 3.02 TB/s copy, 712 TFLOP/s bf16 GEMM"
        );
    }

    #[test]
    fn floors_divide_the_work_by_the_rates() {
        let c = ceilings(2e12, 500e12);
        assert_eq!(c.copy_seconds(4e9), 2e-3);
        assert_eq!(c.gemm_seconds(1e15), 2.0);
        // The same work against the H200's figures is faster by the ratio of the ceilings.
        let h = Ceilings::h200_reference();
        let ratio = c.copy_seconds(1e9) / h.copy_seconds(1e9);
        assert!((ratio - 4.3 / 2.0).abs() < 1e-12);
    }

    #[test]
    fn rates_count_read_and_write_bytes_and_two_flops_per_multiply_add() {
        // 8 copies of 1 GiB in 4 ms: 16 GiB read + written each way.
        let r = copy_rate(1 << 30, 8, 4e-3);
        assert!((r - 2.0 * 8.0 * (1u64 << 30) as f64 / 4e-3).abs() < 1.0);
        // 4 GEMMs of 8192^3 in 5.5 ms: ~800 TFLOP/s.
        let g = gemm_rate(8192, 4, 5.5e-3);
        assert!((g - 2.0 * 8192f64.powi(3) * 4.0 / 5.5e-3).abs() < 1.0);
        assert!((g / 1e12 - 799.6).abs() < 0.1, "{g}");
    }

    #[test]
    fn a_timing_that_gives_no_rate_is_an_error() {
        assert!(checked_rate("copy bandwidth", copy_rate(1, 1, 0.0)).is_err());
        assert!(checked_rate("copy bandwidth", f64::NAN).is_err());
        assert!(checked_rate("copy bandwidth", 0.0).is_err());
        let e = checked_rate("bf16 GEMM rate", -1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bf16 GEMM rate"), "{e}");
        assert_eq!(checked_rate("copy bandwidth", 3e12).ok(), Some(3e12));
    }

    #[test]
    fn the_copy_buffer_fits_a_quarter_of_the_free_memory() {
        const GIB: usize = 1 << 30;
        assert_eq!(copy_buffer_bytes(80 * GIB), Some(GIB));
        assert_eq!(copy_buffer_bytes(4 * GIB), Some(GIB));
        assert_eq!(copy_buffer_bytes(2 * GIB), Some(GIB / 2));
        // Whole MiB.
        assert_eq!(copy_buffer_bytes(2 * GIB + 5), Some(GIB / 2));
        assert_eq!(copy_buffer_bytes(GIB), Some(256 << 20));
        assert_eq!(copy_buffer_bytes(GIB - 1), None);
        assert_eq!(copy_buffer_bytes(0), None);
    }

    #[test]
    fn the_gemm_operand_is_deterministic_nonzero_and_in_range() {
        let a = gemm_operand(1 << 16);
        assert_eq!(a, gemm_operand(1 << 16));
        let zeros = a.iter().filter(|v| v.to_f32() == 0.0).count();
        assert!(zeros < 64, "{zeros} zeros");
        // In [-1, 1) before rounding; bf16 rounds the values nearest 1 up to it.
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(&v.to_f32())));
        let mean = a.iter().map(|v| v.to_f32() as f64).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
    }
}
