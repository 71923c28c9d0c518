//! Decoding Samba-1.3B (bf16, random weights) at batch 1..4 after 1K tokens, with the decoding
//! step's kernels in each configuration, one model for all (`#[ignore]`d; a benchmark for the
//! GPU machine): the default step (auto: the persistent kernel at batch 1, else unfused), the
//! unfused step (cuBLAS for the dense layers, `SAMBA_DECODE=unfused`), the fused step
//! (`SAMBA_FUSED_DECODE=1`), the fused step with programmatic dependent launch (`SAMBA_PDL=1`)
//! and with the norms as kernels of their own (`SAMBA_FUSED_NORM=0`), the unfused step on the
//! GEMV kernel (`SAMBA_GEMV=1`), and the persistent step (`SAMBA_DECODE=persistent`, batch 1).
//! One BENCH line per measurement, next to the floor (weights and state at the copy bandwidth
//! measured on the GPU first, printed as a BENCH line; 4.3 TB/s on an H200).
//!
//! Environment: SAMBA_BENCH_DECODE_VARIANTS (comma-separated names of the variants below,
//! default all), SAMBA_BENCH_DECODE_STEPS (default 64), SAMBA_BENCH_DECODE_BATCHES (default
//! "1,2,4"; batches past the first run the first variant only).

use std::sync::Arc;

use half::bf16;
use samba_cuda::bench::{decode, random_model};
use samba_cuda::{cuda_available, Ceilings, CudaDevice, DecodeKernels};
use samba_model::preset::preset;

mod common;

/// (name, environment) of each configuration of the step.
const VARIANTS: &[(&str, &[(&str, &str)])] = &[
    ("default", &[]),
    ("unfused", &[("SAMBA_DECODE", "unfused")]),
    ("fused", &[("SAMBA_FUSED_DECODE", "1")]),
    (
        "fused-pdl",
        &[("SAMBA_FUSED_DECODE", "1"), ("SAMBA_PDL", "1")],
    ),
    (
        "fused-norm-kernel",
        &[("SAMBA_FUSED_DECODE", "1"), ("SAMBA_FUSED_NORM", "0")],
    ),
    ("gemv", &[("SAMBA_GEMV", "1")]),
    ("persistent", &[("SAMBA_DECODE", "persistent")]),
];
const SWITCHES: &[&str] = &[
    "SAMBA_DECODE",
    "SAMBA_PDL",
    "SAMBA_FUSED_NORM",
    "SAMBA_FUSED_DECODE",
    "SAMBA_GEMV",
];

#[test]
#[ignore = "a benchmark: run on the GPU machine"]
fn bench_decode_samba_1_3b_kernel_variants() {
    if !cuda_available() {
        eprintln!("skipped: no CUDA device on this machine");
        return;
    }
    let dev = Arc::new(CudaDevice::open(0).expect("open device 0"));
    dev.load_all_kernels().expect("kernels");
    let ceilings = Ceilings::measure(&dev).expect("measure the ceilings");
    println!("BENCH {}", ceilings.line());
    let config = preset("samba-1.3b").expect("preset");
    let model = random_model::<bf16>(dev.clone(), config).expect("model");
    let wanted = common::env_list(
        "SAMBA_BENCH_DECODE_VARIANTS",
        &VARIANTS.iter().map(|v| v.0).collect::<Vec<_>>().join(","),
    );
    let steps = std::env::var("SAMBA_BENCH_DECODE_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let batches: Vec<usize> = common::env_list("SAMBA_BENCH_DECODE_BATCHES", "1,2,4")
        .iter()
        .filter_map(|b| b.parse().ok())
        .collect();
    for (i, &batch) in batches.iter().enumerate() {
        for (name, env) in VARIANTS {
            if !wanted.iter().any(|w| w == name) || (i > 0 && *name != wanted[0]) {
                continue;
            }
            for key in SWITCHES {
                std::env::remove_var(key);
            }
            for (key, value) in env.iter() {
                std::env::set_var(key, value);
            }
            let r = decode(
                &model,
                1024,
                batch,
                steps,
                DecodeKernels::from_env(),
                &ceilings,
            )
            .expect("decode");
            println!("BENCH {name:<17} {}", r.line());
            if let Some(e) = &r.graph_error {
                println!("BENCH {name:<17} graph capture failed: {e}");
            }
            if let Some(e) = &r.persistent_error {
                println!("BENCH {name:<17} persistent step not recorded: {e}");
            }
        }
    }
    for key in SWITCHES {
        std::env::remove_var(key);
    }
}
