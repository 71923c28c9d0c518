//! Kernel timings at Samba-1.3B shapes (d 2304, E 4608, 18 heads of 128, window 2048, MLP
//! 6144, vocab 32000) on 4 x 4096 tokens, each next to its hardware ceiling, measured on the
//! GPU at the start (`samba_cuda::Ceilings`, printed as the first BENCH line): memory-bound
//! kernels as a fraction of the copy bandwidth (4.3 TB/s on an H200), GEMMs and attention as a
//! fraction of the bf16 cuBLAS GEMM rate (790 TFLOP/s on an H200). Speed is printed, never
//! asserted: `#[ignore]`d, run by scripts/gpu-check with `--ignored`.

use half::bf16;
use samba_cpu::ops::attention::QkvDims;
use samba_cpu::ops::matmul::LinearDims;
use samba_cpu::ops::selective_scan::ScanDims;
use samba_cuda::ops::selective_scan::ScanBuffers;
use samba_cuda::{cuda_available, ops as gpu, Ceilings, CudaDevice, Elem};

const TOKENS: usize = 4 * 4096;

/// The ceilings of the GPU, measured by the first benchmark that runs (before its buffers) and
/// printed once.
static CEILINGS: std::sync::OnceLock<Ceilings> = std::sync::OnceLock::new();

fn ceilings(dev: &CudaDevice) -> &'static Ceilings {
    CEILINGS.get_or_init(|| {
        let c = Ceilings::measure(dev).expect("measure the ceilings");
        println!("BENCH {}", c.line());
        c
    })
}

/// Mean seconds per call of `f` over enough calls to pass ~50 ms (after a warm-up call).
fn time(dev: &CudaDevice, mut f: impl FnMut()) -> f64 {
    f();
    dev.synchronize().expect("sync");
    let mut n = 1;
    loop {
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        dev.synchronize().expect("sync");
        let dt = t0.elapsed().as_secs_f64();
        if dt > 0.05 || n >= 1 << 12 {
            return dt / n as f64;
        }
        n *= 4;
    }
}

fn line(name: &str, dtype: &str, secs: f64, bytes: f64, flops: f64) {
    let ceilings = CEILINGS
        .get()
        .expect("the ceilings are measured before any kernel is timed");
    let (rate, frac) = if flops > 0.0 {
        (
            format!("{:7.1} TFLOP/s", flops / secs / 1e12),
            ceilings.gemm_seconds(flops) / secs,
        )
    } else {
        (
            format!("{:7.0} GB/s   ", bytes / secs / 1e9),
            ceilings.copy_seconds(bytes) / secs,
        )
    };
    println!(
        "BENCH {name:<26} {dtype:<5} {:9.1} us  {rate}  {:5.1}% of ceiling",
        secs * 1e6,
        frac * 100.0
    );
}

fn elementwise<T: Elem>(dev: &CudaDevice) {
    let sz = std::mem::size_of::<T>() as f64;
    let (d, hidden) = (2304, 6144);
    let x = dev.zeros::<T>(TOKENS * d).expect("alloc");
    let w = dev.zeros::<T>(d).expect("alloc");
    let mut out = dev.zeros::<T>(TOKENS * d).expect("alloc");
    let mut rstd = dev.zeros::<f32>(TOKENS).expect("alloc");
    let s = time(dev, || {
        gpu::rmsnorm::rmsnorm_fwd(dev, &mut out, &mut rstd, &x, &w, 1e-5).expect("rmsnorm")
    });
    line(
        "rmsnorm_fwd [16384, 2304]",
        T::SUFFIX,
        s,
        2.0 * (TOKENS * d) as f64 * sz,
        0.0,
    );

    let g = dev.zeros::<T>(TOKENS * hidden).expect("alloc");
    let mut act = dev.zeros::<T>(TOKENS * hidden).expect("alloc");
    let s = time(dev, || {
        gpu::swiglu::swiglu_fwd(dev, &mut act, &g, &g).expect("swiglu")
    });
    line(
        "swiglu_fwd [16384, 6144]",
        T::SUFFIX,
        s,
        3.0 * (TOKENS * hidden) as f64 * sz,
        0.0,
    );
}

/// The scan at the prefill shapes of Samba-1.3B (128K tokens as 4 x 4K, 1 x 128K, 128 x 1K),
/// with the plan the wrapper picks and, for one long sequence, every plan.
fn scan<T: Elem>(dev: &CudaDevice) {
    use gpu::selective_scan::{selective_scan_fwd_planned, ScanPlan, ScanStrides};
    let sz = std::mem::size_of::<T>() as f64;
    for (batch, seq) in [(4, 4096), (1, 131072), (128, 1024)] {
        let d = ScanDims {
            batch,
            seq,
            d_inner: 4608,
            d_state: 16,
        };
        let lanes = d.batch * d.seq * d.d_inner;
        let big = dev.zeros::<T>(lanes).expect("alloc");
        let small = dev.zeros::<T>(d.batch * d.seq * d.d_state).expect("alloc");
        let a = dev.zeros::<T>(d.d_inner * d.d_state).expect("alloc");
        let e = dev.zeros::<T>(d.d_inner).expect("alloc");
        let bufs = ScanBuffers {
            u: big.as_view(),
            delta_raw: big.as_view(),
            delta_bias: e.as_view(),
            a_log: a.as_view(),
            b: small.as_view(),
            c: small.as_view(),
            d_skip: e.as_view(),
            z: big.as_view(),
        };
        let mut out = dev.zeros::<T>(lanes).expect("alloc");
        let mut plans = vec![ScanPlan::for_dims(d)];
        if batch == 1 {
            plans.push(ScanPlan::Lanes);
        }
        for plan in plans {
            let s = time(dev, || {
                selective_scan_fwd_planned(
                    dev,
                    &mut out,
                    &bufs,
                    d,
                    ScanStrides::contiguous(d),
                    None,
                    None,
                    plan,
                )
                .expect("scan")
            });
            // u, delta_raw, z read and out written once: the least traffic a scan can have.
            line(
                &format!("selective_scan_fwd b{batch} s{seq} {plan:?}"),
                T::SUFFIX,
                s,
                4.0 * lanes as f64 * sz,
                0.0,
            );
        }
    }
}

/// Mamba's causal conv at the 128K-token prefill shape of Samba-1.3B, x read in place from
/// in_proj's output [x_in | z] (stride 2E) as the model does.
fn conv<T: Elem>(dev: &CudaDevice) {
    use samba_cpu::ops::causal_conv::ConvDims;
    let sz = std::mem::size_of::<T>() as f64;
    let d = ConvDims {
        batch: 1,
        seq: 131072,
        channels: 4608,
        kernel: 4,
    };
    let n = d.batch * d.seq * d.channels;
    let xz = dev.zeros::<T>(2 * n).expect("alloc");
    let w = dev.zeros::<T>(d.channels * d.kernel).expect("alloc");
    let bias = dev.zeros::<T>(d.channels).expect("alloc");
    let mut u = dev.zeros::<T>(n).expect("alloc");
    let s = time(dev, || {
        gpu::causal_conv::causal_conv1d_silu_fwd_strided(
            dev,
            &mut u,
            &xz,
            2 * d.channels,
            &w,
            &bias,
            d,
            None,
            None,
        )
        .expect("conv")
    });
    line(
        "causal_conv1d_silu b1 s131072",
        T::SUFFIX,
        s,
        2.0 * n as f64 * sz,
        0.0,
    );
}

fn attention<T: Elem>(dev: &CudaDevice) {
    let dims = QkvDims {
        batch: 4,
        seq: 4096,
        heads: 18,
        kv_heads: 18,
        head_dim: 128,
    };
    let w = 2048usize;
    let qkv = dev.zeros::<T>(TOKENS * dims.qkv_dim()).expect("alloc");
    let mut out = dev.zeros::<T>(TOKENS * dims.out_dim()).expect("alloc");
    let mut lse = dev
        .zeros::<f32>(dims.batch * dims.heads * dims.seq)
        .expect("alloc");
    let s = time(dev, || {
        gpu::attention::attention_fwd(dev, &mut out, &mut lse, &qkv, dims, Some(w)).expect("attn")
    });
    // Visible (query, key) pairs per sequence and head, times 4 head_dim FLOPs (QK and PV).
    let pairs: usize = (0..dims.seq).map(|t| (t + 1).min(w)).sum();
    let flops = 4.0 * (dims.batch * dims.heads * pairs * dims.head_dim) as f64;
    line("attention_fwd s4096 w2048", T::SUFFIX, s, 0.0, flops);
}

fn linear<T: Elem>(dev: &CudaDevice)
where
    cudarc::cublas::CudaBlas: cudarc::cublas::Gemm<T>,
{
    let dims = LinearDims {
        rows: TOKENS,
        in_features: 2304,
        out_features: 6144,
    };
    let inp = dev.zeros::<T>(TOKENS * 2304).expect("alloc");
    let w = dev.zeros::<T>(6144 * 2304).expect("alloc");
    let mut out = dev.zeros::<T>(TOKENS * 6144).expect("alloc");
    let s = time(dev, || {
        gpu::matmul::linear_fwd(dev, &mut out, &inp, &w, dims).expect("gemm")
    });
    line(
        "linear_fwd 16384x2304x6144",
        T::SUFFIX,
        s,
        0.0,
        2.0 * (TOKENS * 2304 * 6144) as f64,
    );
}

/// A decoding step's dense layer: one row against Mamba's in_proj [9216, 2304] (the GEMV kernel),
/// and 64 rows (cuBLAS), as a fraction of the copy bandwidth for the weight bytes. The same
/// weights every call: they stay in the 50 MB L2 (see `gemv_decode` for cold weights).
fn dense_decode<T: Elem>(dev: &CudaDevice) {
    let sz = std::mem::size_of::<T>() as f64;
    let (in_f, out_f) = (2304, 9216);
    let w = dev.zeros::<T>(in_f * out_f).expect("alloc");
    for rows in [1, 64] {
        let inp = dev.zeros::<T>(rows * in_f).expect("alloc");
        let mut out = dev.zeros::<T>(rows * out_f).expect("alloc");
        let dims = LinearDims {
            rows,
            in_features: in_f,
            out_features: out_f,
        };
        let s = time(dev, || {
            gpu::matmul::linear_fwd_strided(dev, &mut out, out_f, &inp, in_f, &w, dims)
                .expect("dense")
        });
        line(
            &format!("dense rows {rows} [9216, 2304]"),
            T::SUFFIX,
            s,
            (in_f * out_f) as f64 * sz,
            0.0,
        );
    }
}

/// The decoding step's dense layers at Samba-1.3B shapes, one row, with cold weights (a pool of
/// copies larger than the 50 MB L2, used in turn, as in a step where 2.66 GB pass through):
/// the GEMV kernels (kernels/gemv.cu) against cuBLAS, as a fraction of the copy bandwidth for
/// the weight bytes. Back-to-back launches on one stream.
fn gemv_decode(dev: &CudaDevice) {
    use samba_cuda::ops::gemv::{
        gemv_conv_fwd, gemv_fwd, gemv_rope_fwd, gemv_swiglu_fwd, GemvInput, GemvOut,
    };
    let shapes = [
        ("in_proj", 2304, 9216),
        ("x_proj", 4608, 176),
        ("out_proj", 4608, 2304),
        ("qkv", 2304, 6912),
        ("attn proj", 2304, 2304),
        ("w1|w2", 2304, 12288),
        ("w3", 6144, 2304),
        ("head", 2304, 32000),
    ];
    let row = dev.zeros::<bf16>(6144).expect("alloc");
    let x = dev.zeros::<f32>(2304).expect("alloc");
    let norm_w = dev.zeros::<bf16>(2304).expect("alloc");
    let mut out = dev.zeros::<bf16>(32000).expect("alloc");
    let mut out_f32 = dev.zeros::<f32>(32000).expect("alloc");
    for (name, in_f, out_f) in shapes {
        let n = in_f * out_f;
        let bytes = (2 * n) as f64;
        let copies = (400e6 / bytes).ceil().max(2.0) as usize;
        let pool = dev.zeros::<bf16>(copies * n).expect("alloc");
        let dims = LinearDims {
            rows: 1,
            in_features: in_f,
            out_features: out_f,
        };
        let inp = row.slice(0..in_f);
        let mut i = 0;
        let mut next = || {
            i = (i + 1) % copies;
            pool.slice(i * n..(i + 1) * n)
        };
        let s = time(dev, || {
            let w = next();
            gemv_fwd(
                dev,
                GemvOut::F32 {
                    out: &mut out_f32.slice_mut(0..out_f),
                    stride: out_f,
                    accumulate: true,
                },
                GemvInput::Rows {
                    inp: &inp,
                    stride: in_f,
                },
                &w,
                dims,
            )
            .expect("gemv")
        });
        line(
            &format!("gemv {name} [{out_f}, {in_f}]"),
            "bf16",
            s,
            bytes,
            0.0,
        );
        let s = time(dev, || {
            let w = next();
            gpu::matmul::linear_fwd(dev, &mut out.slice_mut(0..out_f), &inp, &w, dims)
                .expect("cublas")
        });
        line(
            &format!("cublas {name} [{out_f}, {in_f}]"),
            "bf16",
            s,
            bytes,
            0.0,
        );
        // The fused variants of the layers that have one (RMSNorm prologue + epilogue).
        let norm = || GemvInput::RmsNorm {
            x: &x,
            w: &norm_w,
            eps: 1e-5,
        };
        let fused = match name {
            "in_proj" => {
                let mut u = dev.zeros::<bf16>(4608).expect("alloc");
                let mut xz = dev.zeros::<bf16>(9216).expect("alloc");
                let mut st = dev.zeros::<bf16>(3 * 4608).expect("alloc");
                let (cw, cb) = (
                    dev.zeros::<bf16>(4 * 4608).expect("a"),
                    dev.zeros::<bf16>(4608).expect("a"),
                );
                let conv = samba_cpu::ops::causal_conv::ConvDims {
                    batch: 1,
                    seq: 1,
                    channels: 4608,
                    kernel: 4,
                };
                Some(time(dev, || {
                    let w = next();
                    gemv_conv_fwd(
                        dev,
                        &mut u,
                        &mut xz,
                        &mut st,
                        norm(),
                        &w,
                        2304,
                        &cw,
                        &cb,
                        conv,
                    )
                    .expect("conv")
                }))
            }
            "qkv" => {
                let table = gpu::rope::DeviceRopeTable::upload(
                    dev,
                    &samba_cpu::ops::rope::RopeTable::new(10000.0, 128, 0, 16),
                )
                .expect("table");
                let pos = dev.zeros::<i32>(1).expect("alloc");
                let qkv_dims = QkvDims {
                    batch: 1,
                    seq: 1,
                    heads: 18,
                    kv_heads: 18,
                    head_dim: 128,
                };
                Some(time(dev, || {
                    let w = next();
                    gemv_rope_fwd(
                        dev,
                        &mut out.slice_mut(0..out_f),
                        norm(),
                        &w,
                        2304,
                        qkv_dims,
                        &table,
                        &pos,
                        0,
                    )
                    .expect("rope")
                }))
            }
            "w1|w2" => Some(time(dev, || {
                let w = next();
                let d = LinearDims {
                    out_features: out_f / 2,
                    ..dims
                };
                gemv_swiglu_fwd(dev, &mut out.slice_mut(0..out_f / 2), norm(), &w, d)
                    .expect("swiglu")
            })),
            "head" => Some(time(dev, || {
                let w = next();
                gemv_fwd(
                    dev,
                    GemvOut::F32 {
                        out: &mut out_f32.slice_mut(0..out_f),
                        stride: out_f,
                        accumulate: false,
                    },
                    norm(),
                    &w,
                    dims,
                )
                .expect("head")
            })),
            _ => None,
        };
        if let Some(s) = fused {
            line(&format!("gemv {name} fused"), "bf16", s, bytes, 0.0);
        }
    }
}

fn cross_entropy<T: Elem>(dev: &CudaDevice) {
    let (rows, vocab) = (4096, 32000);
    let logits = dev.zeros::<T>(rows * vocab).expect("alloc");
    let targets = dev.zeros::<u32>(rows).expect("alloc");
    let (mut loss, mut lse) = (
        dev.zeros::<f32>(rows).expect("a"),
        dev.zeros::<f32>(rows).expect("a"),
    );
    let s = time(dev, || {
        gpu::cross_entropy::cross_entropy_fwd(dev, &mut loss, &mut lse, &logits, &targets, vocab)
            .expect("ce")
    });
    let bytes = (rows * vocab * std::mem::size_of::<T>()) as f64;
    line("cross_entropy_fwd [4096, 32000]", T::SUFFIX, s, bytes, 0.0);
}

#[test]
#[ignore = "a benchmark: run on the GPU machine by scripts/gpu-check"]
fn bench_kernels_at_samba_1_3b_shapes() {
    if !cuda_available() {
        eprintln!("skipped: no CUDA device on this machine");
        return;
    }
    let dev = CudaDevice::open(0).expect("open device 0");
    dev.load_all_kernels().expect("kernels");
    ceilings(&dev);
    elementwise::<f32>(&dev);
    elementwise::<bf16>(&dev);
    scan::<f32>(&dev);
    scan::<bf16>(&dev);
    conv::<bf16>(&dev);
    attention::<f32>(&dev);
    attention::<bf16>(&dev);
    linear::<f32>(&dev);
    linear::<bf16>(&dev);
    cross_entropy::<f32>(&dev);
    cross_entropy::<bf16>(&dev);
    dense_decode::<f32>(&dev);
    dense_decode::<bf16>(&dev);
}

#[test]
#[ignore = "a benchmark: run on the GPU machine by scripts/gpu-check"]
fn bench_gemv_at_samba_1_3b_decode_shapes() {
    if !cuda_available() {
        eprintln!("skipped: no CUDA device on this machine");
        return;
    }
    let dev = CudaDevice::open(0).expect("open device 0");
    dev.load_all_kernels().expect("kernels");
    ceilings(&dev);
    gemv_decode(&dev);
}
