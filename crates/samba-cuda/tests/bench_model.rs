//! The model benchmarks of `samba_cuda::bench` on the GPU machine (`#[ignore]`d; run by
//! scripts/gpu-check with `--ignored`): prefill in the paper's protocol (128K tokens per
//! measurement, lengths 1K..128K, batch = 128K / length) and decoding at batch 1, 16 and 64
//! after 1K and 64K tokens of context, for Samba-1.3B and a Llama-3-style GQA model of the same
//! size, bf16, random weights. Prints the GPU's ceilings (measured first; the floors use them),
//! one BENCH line per measurement and the Samba / Llama ratios next to the paper's; writes every
//! report (ceilings included) as a JSON line to $OUT/bench_model.jsonl (or
//! runs/bench_model.jsonl).
//!
//! Environment: SAMBA_BENCH_PARTS (default "prefill,decode"), SAMBA_BENCH_LENGTHS (comma-
//! separated prompt lengths), SAMBA_BENCH_BUDGET_S (seconds per model and part, default 120),
//! SAMBA_BENCH_MODELS (default "samba,llama").

use std::io::Write;
use std::sync::Arc;

use half::bf16;
use samba_cuda::bench::{
    decode, llama_gqa_config, prefill_protocol, random_model, DecodeReport, PrefillReport,
};
use samba_cuda::{cuda_available, Ceilings, CudaDevice, DecodeKernels};
use samba_model::preset::preset;

mod common;

struct Out(std::fs::File);

impl Out {
    fn open() -> Out {
        let dir = std::env::var("OUT").unwrap_or_else(|_| "runs".to_string());
        std::fs::create_dir_all(&dir).expect("output folder");
        Out(std::fs::File::create(format!("{dir}/bench_model.jsonl")).expect("bench_model.jsonl"))
    }
    fn write<T: serde::Serialize>(&mut self, kind: &str, model: &str, r: &T) {
        let mut v = serde_json::to_value(r).expect("json");
        v["bench"] = kind.into();
        v["model"] = model.into();
        writeln!(self.0, "{v}").expect("write");
    }
}

#[test]
#[ignore = "a benchmark: run on the GPU machine by scripts/gpu-check"]
fn bench_prefill_and_decode_samba_and_llama_1_3b() {
    if !cuda_available() {
        eprintln!("skipped: no CUDA device on this machine");
        return;
    }
    let dev = Arc::new(CudaDevice::open(0).expect("open device 0"));
    dev.load_all_kernels().expect("kernels");
    let ceilings = Ceilings::measure(&dev).expect("measure the ceilings");
    println!("BENCH {}", ceilings.line());
    let parts = common::env_list("SAMBA_BENCH_PARTS", "prefill,decode");
    let models = common::env_list("SAMBA_BENCH_MODELS", "samba,llama");
    let lengths: Vec<usize> = common::env_list(
        "SAMBA_BENCH_LENGTHS",
        "1024,2048,4096,8192,16384,32768,65536,131072",
    )
    .iter()
    .map(|s| s.parse().expect("a length"))
    .collect();
    let budget: f64 = std::env::var("SAMBA_BENCH_BUDGET_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120.0);
    let mut out = Out::open();
    let samba = preset("samba-1.3b").expect("preset");
    let mut prefills: Vec<(String, Vec<PrefillReport>)> = Vec::new();
    let mut decodes: Vec<(String, Vec<DecodeReport>)> = Vec::new();
    for name in &models {
        let config = match name.as_str() {
            "samba" => samba.clone(),
            "llama" => llama_gqa_config(&samba),
            other => panic!("unknown model {other} (samba, llama)"),
        };
        let label = format!("{name}-1.3b");
        let t0 = std::time::Instant::now();
        let model = random_model::<bf16>(dev.clone(), config.clone()).expect("model");
        println!(
            "BENCH model {label}: {} layout, {:.3}B parameters, kv_heads {}, mlp_hidden {} (built in {:.1} s)",
            config.layout,
            model.layout.numel as f64 / 1e9,
            config.kv_heads,
            config.mlp_hidden,
            t0.elapsed().as_secs_f64()
        );
        if parts.iter().any(|p| p == "prefill") {
            let reports = prefill_protocol(&model, &lengths, budget, &ceilings, |r| {
                println!("BENCH {}", r.line());
                out.write("prefill", &label, r);
            })
            .expect("prefill");
            prefills.push((name.clone(), reports));
        }
        if parts.iter().any(|p| p == "decode") {
            let start = std::time::Instant::now();
            let mut reports = Vec::new();
            for (context, batch) in [(1024, 1), (1024, 64), (65536, 1), (65536, 16), (65536, 64)] {
                if start.elapsed().as_secs_f64() > budget {
                    println!(
                        "BENCH decode  {name} ctx {context} batch {batch}: skipped (time budget)"
                    );
                    continue;
                }
                let r = decode(
                    &model,
                    context,
                    batch,
                    32,
                    DecodeKernels::from_env(),
                    &ceilings,
                )
                .expect("decode");
                println!("BENCH {}", r.line());
                out.write("decode", &label, &r);
                reports.push(r);
            }
            decodes.push((name.clone(), reports));
        }
    }
    // Samba / Llama, next to the paper's (one A100): 3.73x prompt processing at 128K, 3.64x
    // decoding at 64K (batch 16).
    let find_p = |m: &str, len: usize| {
        prefills
            .iter()
            .find(|(n, _)| n == m)
            .and_then(|(_, rs)| rs.iter().find(|r| r.length == len))
            .and_then(|r| r.tokens_per_second)
    };
    let find_d = |m: &str, ctx: usize, batch: usize| {
        decodes
            .iter()
            .find(|(n, _)| n == m)
            .and_then(|(_, rs)| rs.iter().find(|r| r.context == ctx && r.batch == batch))
            .and_then(|r| r.tokens_per_second)
    };
    for len in [4096, 32768, 131072] {
        if let (Some(s), Some(l)) = (find_p("samba", len), find_p("llama", len)) {
            println!(
                "BENCH ratio prefill {len:>6}: samba {s:.0} / llama {l:.0} tokens/s = {:.2}x (paper at 128K: 3.73x)",
                s / l
            );
        }
    }
    for (ctx, batch) in [(65536, 1), (65536, 16), (1024, 64)] {
        if let (Some(s), Some(l)) = (find_d("samba", ctx, batch), find_d("llama", ctx, batch)) {
            println!(
                "BENCH ratio decode ctx {ctx:>6} batch {batch:>2}: samba {s:.0} / llama {l:.0} tokens/s = {:.2}x (paper at 64K, batch 16: 3.64x)",
                s / l
            );
        }
    }
}
