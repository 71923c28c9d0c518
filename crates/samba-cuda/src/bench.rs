//! Benchmarks of the GPU model, as library functions the CLI (`samba-lm bench ... --device
//! cuda`) calls: prompt processing (prefill) and decoding, each timed on the device and reported
//! next to its floor on one H200.
//!
//! Floors (shared/DESIGN.md; ceilings measured on this machine kind):
//! - prefill: FLOPs / 790 TFLOP/s (the measured bf16 cuBLAS rate); FLOPs per token from
//!   `samba_model::flops::forward_flops_per_token`, less the output head of every token but the
//!   last of each sequence (prefill computes the logits of the last token only);
//! - decoding: bytes a step must read / 4.3 TB/s (the measured copy bandwidth): every weight
//!   once (the embedding as the tied output head; an untied embedding only for its batch rows),
//!   plus the state each sequence reads (conv and SSM states, the keys and values in its window).
//!
//! Speed is measured, never asserted.

use std::sync::Arc;
use std::time::Instant;

use samba_cpu::BatchShape;
use samba_model::flops::forward_flops_per_token;
use samba_model::init::init_params;
use samba_model::{Config, Layout, ParamLayout};
use serde::Serialize;

use crate::model::{
    activation_bytes, CudaActivations, CudaDecodeState, CudaModel, DecodeKernels, LogitRows,
};
use crate::ops::attention::AttentionKernel;
use crate::{CudaDevice, Elem, Result};

/// Measured bf16 GEMM ceiling of one H200 (cuBLAS, 8192^3), FLOP/s.
pub const BF16_GEMM_FLOPS: f64 = 790e12;
/// Measured device-to-device copy bandwidth of one H200, bytes/s (read + write).
pub const COPY_BANDWIDTH: f64 = 4.3e12;
/// Tokens per prefill measurement in the paper's protocol (batch = this / length).
pub const PREFILL_TOKENS: usize = 128 * 1024;

/// A model with the reference initialization (seed 0) on the device.
pub fn random_model<T: Elem>(dev: Arc<CudaDevice>, config: Config) -> Result<CudaModel<T>> {
    let params = init_params(&ParamLayout::new(&config), 0);
    CudaModel::new(dev, config, &params)
}

/// The paper's Llama-3-style baseline at the size of a Samba config: every block full causal
/// attention with grouped-query attention (a third of the query heads as kv heads, rounded to a
/// divisor; Llama-3 8B uses a quarter) and a SwiGLU MLP, untied embeddings, and an MLP width
/// chosen (a multiple of 256) so the parameter count matches Samba's.
pub fn llama_gqa_config(samba: &Config) -> Config {
    let mut c = samba.clone();
    c.layout = Layout::Llama;
    c.tied_embeddings = false;
    c.kv_heads = (1..=samba.heads)
        .rev()
        .find(|&g| samba.heads % g == 0 && g * 3 <= samba.heads)
        .unwrap_or(1);
    let target = ParamLayout::new(samba).numel as f64;
    let d = c.d_model as f64;
    let attention = (c.qkv_dim() as f64 + (c.heads * c.head_dim) as f64) * d;
    let embeddings = 2.0 * c.vocab as f64 * d + d;
    let per_block = (target - embeddings) / c.n_layer as f64 - attention - 2.0 * d;
    let hidden = (per_block / (3.0 * d) / 256.0).round().max(1.0) as usize * 256;
    c.mlp_hidden = hidden;
    c
}

/// A deterministic token stream over the vocabulary (every sequence different).
fn tokens(n: usize, vocab: usize, salt: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + i / 13 + salt * 104_729) % vocab) as u32)
        .collect()
}

/// Free device memory, bytes.
fn free_memory(dev: &CudaDevice) -> Result<usize> {
    Ok(dev.memory()?.0)
}

fn dtype<T: Elem>() -> &'static str {
    T::SUFFIX
}

#[derive(Debug, Clone, Serialize)]
pub struct PrefillReport {
    pub layout: String,
    pub parameters: usize,
    pub dtype: &'static str,
    pub length: usize,
    pub batch: usize,
    pub tokens: usize,
    /// The attention kernel prefill used ("tensor-core" or "simt").
    pub attention: &'static str,
    /// None when the measurement was skipped (see `skipped`).
    pub seconds: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub flops_per_token: f64,
    pub achieved_tflops: Option<f64>,
    pub floor_seconds: f64,
    pub fraction_of_floor: Option<f64>,
    pub skipped: Option<String>,
}

impl PrefillReport {
    pub fn line(&self) -> String {
        match (self.seconds, &self.skipped) {
            (Some(s), _) => format!(
                "prefill {:<10} {} len {:>6} x batch {:>3}: {:>9.0} tokens/s ({:.3} s, {:.0} TFLOP/s); floor {:.3} s at {:.0} TFLOP/s: {:5.1}% of it [{} attention]",
                self.layout,
                self.dtype,
                self.length,
                self.batch,
                self.tokens_per_second.unwrap_or(0.0),
                s,
                self.achieved_tflops.unwrap_or(0.0),
                self.floor_seconds,
                BF16_GEMM_FLOPS / 1e12,
                100.0 * self.fraction_of_floor.unwrap_or(0.0),
                self.attention
            ),
            (None, why) => format!(
                "prefill {:<10} {} len {:>6} x batch {:>3}: skipped ({})",
                self.layout,
                self.dtype,
                self.length,
                self.batch,
                why.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Prompt processing: `total_tokens / length` sequences of `length` tokens through the model in
/// one chunk each, from an empty state (the state is left as generation would continue from it:
/// conv, SSM and key/value rings), logits of the last token of each sequence. Timed after one
/// untimed run of the same shape (which loads kernels and lets cuBLAS pick its algorithms);
/// when that run took over 2 s its time is reported instead of a second run.
pub fn prefill<T: Elem>(
    model: &CudaModel<T>,
    length: usize,
    total_tokens: usize,
) -> Result<PrefillReport> {
    let c = &model.config;
    let dev = model.device().clone();
    let batch = (total_tokens / length).max(1);
    let tokens_n = batch * length;
    let head = 2.0 * (c.vocab * c.d_model) as f64;
    let flops_per_token = forward_flops_per_token(c, length) - head * (1.0 - 1.0 / length as f64);
    let floor_seconds = tokens_n as f64 * flops_per_token / BF16_GEMM_FLOPS;
    let attention = if AttentionKernel::tensor_core_applies::<T>(c.head_dim)
        && model.attention_kernel != AttentionKernel::Simt
        && std::env::var("SAMBA_ATTENTION").map_or(true, |v| v != "simt")
    {
        "tensor-core"
    } else {
        "simt"
    };
    let mut report = PrefillReport {
        layout: c.layout.to_string(),
        parameters: model.layout.numel,
        dtype: dtype::<T>(),
        length,
        batch,
        tokens: tokens_n,
        attention,
        seconds: None,
        tokens_per_second: None,
        flops_per_token,
        achieved_tflops: None,
        floor_seconds,
        fraction_of_floor: None,
        skipped: None,
    };
    let shape = BatchShape { batch, seq: length };
    let need = activation_bytes(c, std::mem::size_of::<T>(), shape, LogitRows::Last)
        + CudaDecodeState::<T>::bytes_for(c, batch, length);
    let free = free_memory(&dev)?;
    if need as f64 > 0.95 * free as f64 {
        report.skipped = Some(format!(
            "needs {:.1} GB of activations and state, {:.1} GB free",
            need as f64 / 1e9,
            free as f64 / 1e9
        ));
        return Ok(report);
    }
    let mut acts = model.activations(shape, LogitRows::Last)?;
    let mut state = CudaDecodeState::new(model, batch, length)?;
    let input: Vec<u32> = (0..batch)
        .flat_map(|b| tokens(length, c.vocab, b))
        .collect();
    let run = |state: &mut CudaDecodeState<T>, acts: &mut CudaActivations<T>| -> Result<f64> {
        state.reset(&dev)?;
        dev.synchronize()?;
        let t0 = Instant::now();
        model.forward_with_state(acts, &input, state)?;
        dev.synchronize()?;
        Ok(t0.elapsed().as_secs_f64())
    };
    let first = run(&mut state, &mut acts)?;
    let seconds = if first > 2.0 {
        first
    } else {
        run(&mut state, &mut acts)?
    };
    report.seconds = Some(seconds);
    report.tokens_per_second = Some(tokens_n as f64 / seconds);
    report.achieved_tflops = Some(tokens_n as f64 * flops_per_token / seconds / 1e12);
    report.fraction_of_floor = Some(floor_seconds / seconds);
    Ok(report)
}

/// The paper's protocol: `PREFILL_TOKENS` tokens per measurement at the given prompt lengths
/// (1K..128K, doubling), batch = tokens / length. A length is skipped (reported as such) when
/// the time spent plus 2.5 times the last measurement's would pass `budget_seconds` (the work
/// per measurement grows with the length through attention).
pub fn prefill_protocol<T: Elem>(
    model: &CudaModel<T>,
    lengths: &[usize],
    budget_seconds: f64,
    mut on_report: impl FnMut(&PrefillReport),
) -> Result<Vec<PrefillReport>> {
    let start = Instant::now();
    let mut last = 0.0f64;
    let mut out = Vec::new();
    for &length in lengths {
        let spent = start.elapsed().as_secs_f64();
        let r = if spent + 2.5 * last > budget_seconds {
            let c = &model.config;
            PrefillReport {
                layout: c.layout.to_string(),
                parameters: model.layout.numel,
                dtype: dtype::<T>(),
                length,
                batch: (PREFILL_TOKENS / length).max(1),
                tokens: PREFILL_TOKENS,
                attention: "",
                seconds: None,
                tokens_per_second: None,
                flops_per_token: forward_flops_per_token(c, length),
                achieved_tflops: None,
                floor_seconds: 0.0,
                fraction_of_floor: None,
                skipped: Some(format!(
                    "time budget: {spent:.0} s spent of {budget_seconds:.0}, the last length took {last:.1} s"
                )),
            }
        } else {
            let r = prefill(model, length, PREFILL_TOKENS)?;
            last = r.seconds.unwrap_or(last);
            r
        };
        on_report(&r);
        out.push(r);
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct DecodeReport {
    pub layout: String,
    pub parameters: usize,
    pub dtype: &'static str,
    pub context: usize,
    pub batch: usize,
    pub steps: usize,
    /// Per step, replaying the captured graph (None when skipped).
    pub ms_per_step: Option<f64>,
    /// Per step, launching every kernel eagerly (no graph).
    pub eager_ms_per_step: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub graph_captured: bool,
    pub graph_error: Option<String>,
    /// What the timed steps ran: "persistent kernel", "graph" or "eager".
    pub step: &'static str,
    /// Why the persistent step could not be recorded, when it was asked for.
    pub persistent_error: Option<String>,
    pub weight_bytes_per_step: usize,
    pub state_bytes_per_step: usize,
    pub floor_ms: f64,
    pub fraction_of_floor: Option<f64>,
    pub skipped: Option<String>,
}

impl DecodeReport {
    pub fn line(&self) -> String {
        match self.ms_per_step {
            Some(ms) => format!(
                "decode  {:<10} {} ctx {:>6} batch {:>3}: {:>9.0} tokens/s, {:.3} ms/step (eager {:.3}); floor {:.3} ms ({:.2} GB weights + {:.2} GB state at {:.1} TB/s): {:5.1}% of it [{}]",
                self.layout,
                self.dtype,
                self.context,
                self.batch,
                self.tokens_per_second.unwrap_or(0.0),
                ms,
                self.eager_ms_per_step.unwrap_or(0.0),
                self.floor_ms,
                self.weight_bytes_per_step as f64 / 1e9,
                self.state_bytes_per_step as f64 / 1e9,
                COPY_BANDWIDTH / 1e12,
                100.0 * self.fraction_of_floor.unwrap_or(0.0),
                self.step
            ),
            None => format!(
                "decode  {:<10} {} ctx {:>6} batch {:>3}: skipped ({})",
                self.layout,
                self.dtype,
                self.context,
                self.batch,
                self.skipped.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Bytes of weights a decoding step reads at `batch`: all of them, but an untied input
/// embedding only for its batch rows.
fn weight_bytes_per_step<T: Elem>(model: &CudaModel<T>, batch: usize) -> usize {
    let c = &model.config;
    let t = std::mem::size_of::<T>();
    let mut n = model.layout.numel;
    if !c.tied_embeddings {
        n = n - c.vocab * c.d_model + batch.min(c.vocab) * c.d_model;
    }
    n * t
}

/// Decoding: one sequence prefilled with `context` tokens (in chunks of up to 32K), copied to
/// `batch` slots, then `steps` decoding steps timed back to back (the captured graph replayed;
/// the same number of eager steps timed for comparison), tokens fixed (no sampling on the host).
pub fn decode<T: Elem>(
    model: &CudaModel<T>,
    context: usize,
    batch: usize,
    steps: usize,
    kernels: DecodeKernels,
) -> Result<DecodeReport> {
    let c = &model.config;
    let dev = model.device().clone();
    let steps = steps.max(1);
    let max_context = context + 2 * steps + 4;
    let weight_bytes = weight_bytes_per_step(model, batch);
    let mut report = DecodeReport {
        layout: c.layout.to_string(),
        parameters: model.layout.numel,
        dtype: dtype::<T>(),
        context,
        batch,
        steps,
        ms_per_step: None,
        eager_ms_per_step: None,
        tokens_per_second: None,
        graph_captured: false,
        graph_error: None,
        step: "eager",
        persistent_error: None,
        weight_bytes_per_step: weight_bytes,
        state_bytes_per_step: 0,
        floor_ms: 0.0,
        fraction_of_floor: None,
        skipped: None,
    };
    let chunk = context.clamp(1, 32 * 1024);
    let need = CudaDecodeState::<T>::bytes_for(c, batch + 1, max_context)
        + activation_bytes(
            c,
            std::mem::size_of::<T>(),
            BatchShape {
                batch: 1,
                seq: chunk,
            },
            LogitRows::Last,
        )
        + activation_bytes(
            c,
            std::mem::size_of::<T>(),
            BatchShape { batch, seq: 1 },
            LogitRows::Last,
        );
    let free = free_memory(&dev)?;
    if need as f64 > 0.95 * free as f64 {
        report.skipped = Some(format!(
            "needs {:.1} GB of state and activations, {:.1} GB free",
            need as f64 / 1e9,
            free as f64 / 1e9
        ));
        return Ok(report);
    }
    // Prefill one sequence, then copy it to every slot.
    let mut one = CudaDecodeState::new(model, 1, max_context)?;
    {
        let input = tokens(context, c.vocab, 0);
        let mut full: Option<CudaActivations<T>> = None;
        for part in input.chunks(chunk) {
            let shape = BatchShape {
                batch: 1,
                seq: part.len(),
            };
            if part.len() == chunk {
                let acts = match full.as_mut() {
                    Some(a) => a,
                    None => full.insert(model.activations(shape, LogitRows::Last)?),
                };
                model.forward_with_state(acts, part, &mut one)?;
            } else {
                let mut acts = model.activations(shape, LogitRows::Last)?;
                model.forward_with_state(&mut acts, part, &mut one)?;
            }
        }
    }
    let mut state = if batch == 1 {
        one
    } else {
        let s = one.repeat(model, batch)?;
        drop(one);
        s
    };
    let mut acts = model.activations(BatchShape { batch, seq: 1 }, LogitRows::Last)?;
    acts.set_decode_kernels(kernels);
    let next: Vec<u32> = (0..batch).map(|b| (b * 31 % c.vocab) as u32).collect();
    // Two untimed steps: the first runs eagerly and captures the graph (or records the
    // persistent step), the second replays it.
    for _ in 0..2 {
        model.decode_step(&mut acts, &next, &mut state)?;
    }
    dev.synchronize()?;
    report.state_bytes_per_step = state.bytes_read_per_step(c);
    let t0 = Instant::now();
    for _ in 0..steps {
        model.decode_step(&mut acts, &next, &mut state)?;
    }
    dev.synchronize()?;
    let graph_ms = 1e3 * t0.elapsed().as_secs_f64() / steps as f64;
    let t0 = Instant::now();
    for _ in 0..steps {
        model.forward_with_state(&mut acts, &next, &mut state)?;
    }
    dev.synchronize()?;
    let eager_ms = 1e3 * t0.elapsed().as_secs_f64() / steps as f64;
    let floor_ms = 1e3 * (weight_bytes + report.state_bytes_per_step) as f64 / COPY_BANDWIDTH;
    report.ms_per_step = Some(graph_ms);
    report.eager_ms_per_step = Some(eager_ms);
    report.tokens_per_second = Some(batch as f64 * 1e3 / graph_ms);
    report.graph_captured = acts.graph_captured();
    report.graph_error = acts.graph_error().map(str::to_string);
    report.persistent_error = acts.persistent_error().map(str::to_string);
    report.step = if acts.persistent_active() {
        "persistent kernel"
    } else if acts.graph_captured() {
        "graph"
    } else {
        "eager"
    };
    report.floor_ms = floor_ms;
    report.fraction_of_floor = Some(floor_ms / graph_ms);
    Ok(report)
}
