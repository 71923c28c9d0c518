//! Inference benchmarks on the CPU: chunked prefill, token-by-token decoding after a context,
//! and the peak memory of streaming a long input.
//!
//! Floors: prefill cannot beat FLOPs / (this machine's f32 GEMM rate); a decoding step reads
//! every weight once, so it cannot beat weight bytes / (this machine's memory bandwidth). On a
//! GPU (`--device cuda`) the same floors come from the GPU's bf16 GEMM rate and copy bandwidth,
//! measured once before the model is on it (`samba_cuda::Ceilings`) and printed first.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use samba_cpu::{BatchShape, CpuModel, DecodeState};
use samba_cuda::{Ceilings, CudaDevice, DecodeKernels};
use samba_model::flops::forward_flops_per_token;
use samba_model::init::init_params;
use samba_model::ParamLayout;
use samba_runtime::Engine;
use serde::Serialize;

use super::forward::gemm_ceiling;
use crate::commands::config_args::ConfigArgs;
use crate::commands::device::{self, Device};
use crate::commands::score::score_tokens;

#[derive(Args, Debug)]
pub struct PrefillArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 1024)]
    pub context: usize,
    /// Tokens per forward pass (CPU).
    #[arg(long, default_value_t = 512)]
    pub chunk: usize,
    /// On a GPU: run the paper's protocol instead of one length: 128K tokens per measurement,
    /// lengths 1K to 128K, batch = 128K / length, then the same on a Llama/GQA twin.
    #[arg(long)]
    pub protocol: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Tokens of context prefilled before decoding.
    #[arg(long, default_value_t = 1024)]
    pub context: usize,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Decoding steps timed.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Also measure the Llama/GQA twin of the same size (GPU).
    #[arg(long)]
    pub llama: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The GPU decoding step's kernels: auto (persistent at batch 1, else unfused), unfused
    /// (norms, cuBLAS GEMMs and elementwise kernels), fused (GEMV kernels with the elementwise
    /// work in them), or persistent (the fused step as phases of persistent kernels that stream
    /// the weights through shared memory; batch 1). Default: $SAMBA_DECODE, else auto.
    #[arg(long, value_parser = ["auto", "unfused", "fused", "persistent"])]
    pub kernels: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MemoryArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Tokens to stream through `score`.
    #[arg(long, default_value_t = 1_000_000)]
    pub tokens: usize,
    #[arg(long, default_value_t = 512)]
    pub chunk: usize,
    #[arg(long)]
    pub json: bool,
}

fn random_model(config: &ConfigArgs) -> Result<CpuModel> {
    let config = config.to_config()?;
    let layout = ParamLayout::new(&config);
    let params = init_params(&layout, 0);
    Ok(CpuModel::new(config, params))
}

/// A deterministic token stream over the vocabulary.
fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + i / 13) % vocab) as u32)
        .collect()
}

fn print<T: Serialize>(json: bool, report: &T, lines: &[String]) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        lines.iter().for_each(|l| println!("{l}"));
    }
    Ok(())
}

#[derive(Serialize)]
struct PrefillReport {
    preset: String,
    layout: String,
    parameters: usize,
    context: usize,
    chunk: usize,
    threads: usize,
    seconds: f64,
    tokens_per_second: f64,
    state_bytes: usize,
    floor_tokens_per_second: f64,
    fraction_of_floor: f64,
}

/// Prints a GPU benchmark report as a line or as JSON.
fn show<T: Serialize>(json: bool, report: &T, line: String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{line}");
    }
    Ok(())
}

/// Measures the GPU's ceilings (the floors' denominators) once, before any model is on it, and
/// prints them ahead of the figures: on stdout, or on stderr when stdout carries JSON (every
/// JSON report holds them too).
fn measure_ceilings(dev: &CudaDevice, json: bool) -> Result<Ceilings> {
    let ceilings = Ceilings::measure(dev).with_context(|| {
        format!(
            "measuring the copy bandwidth and bf16 GEMM rate of {} (the benchmark's floors)",
            dev.name()
        )
    })?;
    if json {
        eprintln!("{}", ceilings.line());
    } else {
        println!("{}", ceilings.line());
    }
    Ok(ceilings)
}

fn prefill_cuda(args: &PrefillArgs, dev: std::sync::Arc<CudaDevice>) -> Result<()> {
    let config = args.config.to_config()?;
    let ceilings = measure_ceilings(&dev, args.json)?;
    const TOTAL: usize = 128 * 1024;
    let lengths: Vec<usize> = if args.protocol {
        (10..=17).map(|p| 1usize << p).collect()
    } else {
        vec![args.context]
    };
    let mut configs = vec![config.clone()];
    if args.protocol {
        configs.push(samba_cuda::bench::llama_gqa_config(&config));
    }
    for config in configs {
        let model = samba_cuda::bench::random_model::<half::bf16>(dev.clone(), config)?;
        if args.protocol {
            samba_cuda::bench::prefill_protocol(&model, &lengths, f64::INFINITY, &ceilings, |r| {
                let _ = show(args.json, r, r.line());
            })?;
        } else {
            let r = samba_cuda::bench::prefill(
                &model,
                args.context,
                args.context.max(TOTAL),
                &ceilings,
            )?;
            show(args.json, &r, r.line())?;
        }
    }
    Ok(())
}

pub fn prefill(args: PrefillArgs) -> Result<()> {
    if let Device::Cuda(dev) = device::open(&args.device)? {
        return prefill_cuda(&args, dev);
    }
    let model = random_model(&args.config)?;
    let input = tokens(args.context, model.config.vocab);
    let mut state = DecodeState::new(&model, 1, args.context);
    let bar = indicatif::ProgressBar::new(args.context as u64);
    let start = Instant::now();
    model.prefill(&mut state, &input, args.chunk, |acts, _| {
        bar.inc(acts.shape.rows() as u64)
    })?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let flops_per_token = forward_flops_per_token(&model.config, args.context);
    let floor = gemm_ceiling(model.config.d_model) * 1e9 / flops_per_token;
    let tokens_per_second = args.context as f64 / seconds;
    let report = PrefillReport {
        preset: args.config.preset.clone(),
        layout: model.config.layout.to_string(),
        parameters: model.layout.numel,
        context: args.context,
        chunk: args.chunk,
        threads: rayon::current_num_threads(),
        seconds,
        tokens_per_second,
        state_bytes: state.bytes(),
        floor_tokens_per_second: floor,
        fraction_of_floor: tokens_per_second / floor,
    };
    let lines = [
        format!(
            "prefill {} ({} layout, {:.1}M parameters), {} tokens in chunks of {}, {} threads",
            report.preset,
            report.layout,
            report.parameters as f64 / 1e6,
            report.context,
            report.chunk,
            report.threads
        ),
        format!(
            "  {:.1} tokens/s ({:.2} s); state after: {:.1} MB",
            tokens_per_second,
            seconds,
            report.state_bytes as f64 / 1e6
        ),
        format!(
            "  floor (FLOPs at the f32 GEMM rate of this machine): {:.1} tokens/s ({:.0}% of it)",
            floor,
            100.0 * report.fraction_of_floor
        ),
    ];
    print(args.json, &report, &lines)
}

/// Memory bandwidth of this machine (GB/s): copying a buffer far larger than the caches.
fn memory_bandwidth() -> f64 {
    let n = 64 << 20; // 256 MB of f32
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    dst.copy_from_slice(&src);
    let reps = 4;
    let start = Instant::now();
    for _ in 0..reps {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
    }
    // A copy reads and writes every byte.
    2.0 * (n * 4 * reps) as f64 / start.elapsed().as_secs_f64() / 1e9
}

#[derive(Serialize)]
struct DecodeReport {
    preset: String,
    layout: String,
    parameters: usize,
    context: usize,
    batch: usize,
    steps: usize,
    threads: usize,
    prefill_tokens_per_second: f64,
    tokens_per_second: f64,
    ms_per_step: f64,
    memory_bandwidth_gb_s: f64,
    floor_ms_per_step: f64,
    fraction_of_floor: f64,
}

pub fn decode(args: DecodeArgs) -> Result<()> {
    anyhow::ensure!(
        args.batch >= 1 && args.steps >= 1 && args.context >= 1,
        "--batch, --steps and --context must be at least 1"
    );
    if let Device::Cuda(dev) = device::open(&args.device)? {
        let config = args.config.to_config()?;
        let mut configs = vec![config.clone()];
        if args.llama {
            configs.push(samba_cuda::bench::llama_gqa_config(&config));
        }
        let kernels = match args.kernels.as_deref() {
            Some("persistent") => DecodeKernels::Persistent,
            Some("fused") => DecodeKernels::Fused,
            Some("auto") => DecodeKernels::Auto,
            Some(_) => DecodeKernels::Unfused,
            None => DecodeKernels::from_env(),
        };
        let ceilings = measure_ceilings(&dev, args.json)?;
        for config in configs {
            let model = samba_cuda::bench::random_model::<half::bf16>(dev.clone(), config)?;
            let r = samba_cuda::bench::decode(
                &model,
                args.context,
                args.batch,
                args.steps,
                kernels,
                &ceilings,
            )?;
            show(args.json, &r, r.line())?;
        }
        return Ok(());
    }
    let model = random_model(&args.config)?;
    let vocab = model.config.vocab;
    eprintln!("prefilling {} tokens of context...", args.context);
    let mut one = DecodeState::new(&model, 1, args.context + args.steps);
    let bar = indicatif::ProgressBar::new(args.context as u64);
    let prefill_start = Instant::now();
    let logits = model.prefill(&mut one, &tokens(args.context, vocab), 512, |acts, _| {
        bar.inc(acts.shape.rows() as u64)
    })?;
    let prefill_seconds = prefill_start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // Every sequence of the batch starts from the same context.
    let mut state = DecodeState::stack(vec![one; args.batch]);
    let mut acts = model.activations(BatchShape {
        batch: args.batch,
        seq: 1,
    });
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    let mut next = vec![argmax(&logits); args.batch];
    let start = Instant::now();
    for _ in 0..args.steps {
        model.forward_with_state(&mut acts, &next, &mut state)?;
        for (b, row) in acts.logits.chunks(vocab).enumerate() {
            next[b] = argmax(row);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let ms_per_step = 1e3 * seconds / args.steps as f64;
    let bandwidth = memory_bandwidth();
    // Every f32 weight is read once per step (the output head included when tied), plus the
    // state each sequence reads.
    let bytes = 4.0 * model.layout.numel as f64 + state.bytes() as f64;
    let floor_ms = 1e3 * bytes / (bandwidth * 1e9);
    let report = DecodeReport {
        preset: args.config.preset.clone(),
        layout: model.config.layout.to_string(),
        parameters: model.layout.numel,
        context: args.context,
        batch: args.batch,
        steps: args.steps,
        threads: rayon::current_num_threads(),
        prefill_tokens_per_second: args.context as f64 / prefill_seconds,
        tokens_per_second: (args.batch * args.steps) as f64 / seconds,
        ms_per_step,
        memory_bandwidth_gb_s: bandwidth,
        floor_ms_per_step: floor_ms,
        fraction_of_floor: floor_ms / ms_per_step,
    };
    let lines = [
        format!(
            "decode {} ({} layout, {:.1}M parameters) after {} tokens of context, batch {}, {} threads",
            report.preset,
            report.layout,
            report.parameters as f64 / 1e6,
            report.context,
            report.batch,
            report.threads
        ),
        format!(
            "  prefill of the context: {:.1} tokens/s; decoding: {:.1} tokens/s ({:.1} ms per step)",
            report.prefill_tokens_per_second, report.tokens_per_second, ms_per_step
        ),
        format!(
            "  floor: {:.1} MB of weights and state per step at {:.1} GB/s = {:.1} ms ({:.0}% of it)",
            bytes / 1e6,
            bandwidth,
            floor_ms,
            100.0 * report.fraction_of_floor
        ),
    ];
    print(args.json, &report, &lines)
}

/// Peak resident set size of this process (VmHWM), in bytes.
fn peak_rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (Linux only)")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("/proc/self/status has no VmHWM line")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("unreadable VmHWM line")?;
    Ok(kb * 1024)
}

#[derive(Serialize)]
struct MemoryReport {
    preset: String,
    layout: String,
    parameters: usize,
    tokens: usize,
    chunk: usize,
    seconds: f64,
    tokens_per_second: f64,
    mean_nll: f64,
    peak_rss_bytes: u64,
    weights_bytes: usize,
}

pub fn memory(args: MemoryArgs) -> Result<()> {
    anyhow::ensure!(args.tokens >= 2, "--tokens must be at least 2");
    let model = random_model(&args.config)?;
    // The ids (4 bytes each) and their log-probabilities (8 bytes each) are held whole, as
    // `score` holds them; everything else is the size of a chunk.
    let input = tokens(args.tokens, model.config.vocab);
    let (layout, parameters) = (model.config.layout.to_string(), model.layout.numel);
    let engine = Engine::Cpu(model);
    let start = Instant::now();
    let logprobs = score_tokens(&engine, &input, args.chunk)?;
    let seconds = start.elapsed().as_secs_f64();
    let mean_nll = -logprobs.iter().sum::<f64>() / logprobs.len() as f64;
    let report = MemoryReport {
        preset: args.config.preset.clone(),
        layout,
        parameters,
        tokens: args.tokens,
        chunk: args.chunk,
        seconds,
        tokens_per_second: args.tokens as f64 / seconds,
        mean_nll,
        peak_rss_bytes: peak_rss()?,
        weights_bytes: 4 * parameters,
    };
    let lines = [
        format!(
            "scored {} tokens with {} ({} layout, {:.1}M parameters) in chunks of {}: {:.1} s, {:.0} tokens/s",
            report.tokens,
            report.preset,
            report.layout,
            report.parameters as f64 / 1e6,
            report.chunk,
            seconds,
            report.tokens_per_second
        ),
        format!(
            "  peak resident memory {:.1} MB (weights {:.1} MB; the token ids and their log-probabilities, 12 bytes per token, are the only part that grows)",
            report.peak_rss_bytes as f64 / 1e6,
            report.weights_bytes as f64 / 1e6
        ),
    ];
    print(args.json, &report, &lines)
}
