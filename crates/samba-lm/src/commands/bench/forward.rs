//! `samba-lm bench forward`: the parallel forward pass over a batch.
//!
//! On the CPU the floor is the machine's own dense f32 GEMM rate, measured here with the same
//! GEMM the model uses: a forward pass cannot do its FLOPs faster than that.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use samba_cpu::ops::matmul::{linear_fwd, LinearDims};
use samba_cpu::testing::random_vec;
use samba_cpu::{BatchShape, CpuModel};
use samba_model::flops::forward_flops_per_token;
use samba_model::init::init_params;
use samba_model::ParamLayout;
use serde::Serialize;

use crate::commands::config_args::ConfigArgs;

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 1024)]
    pub seq: usize,
    /// Timed passes (after one warm-up pass).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ForwardReport {
    preset: String,
    layout: String,
    parameters: usize,
    batch: usize,
    seq: usize,
    threads: usize,
    seconds_per_pass: f64,
    tokens_per_second: f64,
    gflops_per_token: f64,
    achieved_gflops: f64,
    gemm_ceiling_gflops: f64,
    fraction_of_ceiling: f64,
}

/// The dense GEMM rate of this machine (GFLOP/s) at a size like the model's projections.
pub fn gemm_ceiling(d: usize) -> f64 {
    let (rows, k, n) = (1024, d.max(256), 4 * d.max(256));
    let a = random_vec(rows * k, 1, 1.0);
    let w = random_vec(n * k, 2, 1.0);
    let mut out = vec![0.0; rows * n];
    let dims = LinearDims {
        rows,
        in_features: k,
        out_features: n,
    };
    linear_fwd(&mut out, &a, &w, dims);
    let reps = 5;
    let start = Instant::now();
    for _ in 0..reps {
        linear_fwd(&mut out, &a, &w, dims);
    }
    let secs = start.elapsed().as_secs_f64() / reps as f64;
    2.0 * (rows * k * n) as f64 / secs / 1e9
}

pub fn run(args: ForwardArgs) -> Result<()> {
    let config = args.config.to_config()?;
    let layout = ParamLayout::new(&config);
    let params = init_params(&layout, 0);
    let model = CpuModel::new(config.clone(), params);
    let shape = BatchShape {
        batch: args.batch,
        seq: args.seq,
    };
    let tokens: Vec<u32> = (0..shape.rows())
        .map(|i| (i * 7919 % config.vocab) as u32)
        .collect();
    let mut acts = model.activations(shape);
    eprintln!("warm-up pass ({} x {} tokens)...", args.batch, args.seq);
    model.forward(&mut acts, &tokens)?;
    let bar = indicatif::ProgressBar::new(args.iters as u64);
    let start = Instant::now();
    for _ in 0..args.iters {
        model.forward(&mut acts, &tokens)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64() / args.iters.max(1) as f64;
    let tokens_per_second = shape.rows() as f64 / secs;
    let gflops_per_token = forward_flops_per_token(&config, args.seq) / 1e9;
    let achieved = gflops_per_token * tokens_per_second;
    let ceiling = gemm_ceiling(config.d_model);
    let report = ForwardReport {
        preset: args.config.preset.clone(),
        layout: config.layout.to_string(),
        parameters: layout.numel,
        batch: args.batch,
        seq: args.seq,
        threads: rayon::current_num_threads(),
        seconds_per_pass: secs,
        tokens_per_second,
        gflops_per_token,
        achieved_gflops: achieved,
        gemm_ceiling_gflops: ceiling,
        fraction_of_ceiling: achieved / ceiling,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "forward {} ({} layout, {:.1}M parameters), batch {} x seq {}, {} threads",
            report.preset,
            report.layout,
            report.parameters as f64 / 1e6,
            report.batch,
            report.seq,
            report.threads
        );
        println!(
            "  {:.1} tokens/s ({:.3} s per pass)",
            report.tokens_per_second, report.seconds_per_pass
        );
        println!(
            "  {:.2} GFLOP/token -> {:.1} GFLOP/s achieved; floor: f32 GEMM ceiling {:.1} GFLOP/s on this machine ({:.0}% of it)",
            report.gflops_per_token,
            report.achieved_gflops,
            report.gemm_ceiling_gflops,
            100.0 * report.fraction_of_ceiling
        );
    }
    Ok(())
}
