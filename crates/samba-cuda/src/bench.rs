//! Benchmarks of the GPU model, as library functions the CLI (`samba-lm bench ... --device
//! cuda`) calls: prompt processing (prefill) and decoding, each timed on the device and reported
//! next to its floor on the GPU it runs on.
//!
//! Floors (shared/DESIGN.md), from the [`Ceilings`] measured on that GPU (`ceilings.rs`; one
//! H200 measured 790 TFLOP/s and 4.3 TB/s):
//! - prefill: FLOPs / the bf16 GEMM rate (cuBLAS); FLOPs per token from
//!   `samba_model::flops::forward_flops_per_token`, less the output head of every token but the
//!   last of each sequence (prefill computes the logits of the last token only);
//! - decoding: bytes a step must read / the copy bandwidth: every weight once (the embedding as
//!   the tied output head; an untied embedding only for its batch rows), plus the state each
//!   sequence reads (conv and SSM states, the keys and values in its window).
//!
//! The ceilings are measured once per process ([`Ceilings::measure`], before a model is on the
//! device) and passed to every benchmark, which keeps them in its report.
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
use crate::{Ceilings, CudaDevice, Elem, Result};

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
    /// FLOPs at the measured bf16 GEMM rate (`ceilings`).
    pub floor_seconds: f64,
    pub fraction_of_floor: Option<f64>,
    pub skipped: Option<String>,
    /// The rates the floor was computed from, and the device they were measured on.
    pub ceilings: Ceilings,
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
                self.ceilings.gemm_tflops(),
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
/// when that run took over 2 s its time is reported instead of a second run. The floor is the
/// FLOPs at `ceilings`' bf16 GEMM rate.
pub fn prefill<T: Elem>(
    model: &CudaModel<T>,
    length: usize,
    total_tokens: usize,
    ceilings: &Ceilings,
) -> Result<PrefillReport> {
    let c = &model.config;
    let dev = model.device().clone();
    let batch = (total_tokens / length).max(1);
    let tokens_n = batch * length;
    let flops_per_token = prefill_flops_per_token(c, length);
    let floor_seconds = ceilings.gemm_seconds(tokens_n as f64 * flops_per_token);
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
        ceilings: ceilings.clone(),
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
    ceilings: &Ceilings,
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
                ceilings: ceilings.clone(),
            }
        } else {
            let r = prefill(model, length, PREFILL_TOKENS, ceilings)?;
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
    /// Weight and state bytes at the measured copy bandwidth (`ceilings`).
    pub floor_ms: f64,
    pub fraction_of_floor: Option<f64>,
    pub skipped: Option<String>,
    /// The rates the floor was computed from, and the device they were measured on.
    pub ceilings: Ceilings,
}

impl DecodeReport {
    /// What the timed steps ran, and why not the persistent kernel where it was tried and refused.
    fn step_note(&self) -> String {
        crate::model::describe_step(self.step, self.persistent_error.as_deref())
    }

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
                self.ceilings.copy_tb_per_second(),
                100.0 * self.fraction_of_floor.unwrap_or(0.0),
                self.step_note()
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

/// FLOPs per token of prefill at `length`: the forward pass's, less the output head of every
/// token but the last of each sequence (prefill computes the last token's logits only).
fn prefill_flops_per_token(c: &Config, length: usize) -> f64 {
    let head = 2.0 * (c.vocab * c.d_model) as f64;
    forward_flops_per_token(c, length) - head * (1.0 - 1.0 / length as f64)
}

/// Bytes of weights a decoding step reads at `batch`: all `numel` parameters of `elem_bytes`
/// each, but an untied input embedding only for its batch rows.
fn weight_bytes_per_step(c: &Config, numel: usize, elem_bytes: usize, batch: usize) -> usize {
    let mut n = numel;
    if !c.tied_embeddings {
        n = n - c.vocab * c.d_model + batch.min(c.vocab) * c.d_model;
    }
    n * elem_bytes
}

/// Decoding: one sequence prefilled with `context` tokens (in chunks of up to 32K), copied to
/// `batch` slots, then `steps` decoding steps timed back to back (the captured graph replayed;
/// the same number of eager steps timed for comparison), tokens fixed (no sampling on the host).
/// The floor is the weight and state bytes at `ceilings`' copy bandwidth.
pub fn decode<T: Elem>(
    model: &CudaModel<T>,
    context: usize,
    batch: usize,
    steps: usize,
    kernels: DecodeKernels,
    ceilings: &Ceilings,
) -> Result<DecodeReport> {
    let c = &model.config;
    let dev = model.device().clone();
    let steps = steps.max(1);
    let max_context = context + 2 * steps + 4;
    let weight_bytes =
        weight_bytes_per_step(c, model.layout.numel, std::mem::size_of::<T>(), batch);
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
        ceilings: ceilings.clone(),
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
    let floor_ms = 1e3 * ceilings.copy_seconds((weight_bytes + report.state_bytes_per_step) as f64);
    report.ms_per_step = Some(graph_ms);
    report.eager_ms_per_step = Some(eager_ms);
    report.tokens_per_second = Some(batch as f64 * 1e3 / graph_ms);
    report.graph_captured = acts.graph_captured();
    report.graph_error = acts.graph_error().map(str::to_string);
    report.persistent_error = acts.persistent_error().map(str::to_string);
    report.step = acts.step_kind();
    report.floor_ms = floor_ms;
    report.fraction_of_floor = Some(floor_ms / graph_ms);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use samba_model::preset::preset;

    use super::*;
    use crate::ceilings::CeilingSource;

    fn h100() -> Ceilings {
        Ceilings {
            device: "NVIDIA H100 80GB HBM3".to_string(),
            copy_bytes_per_second: 3.0e12,
            bf16_gemm_flops_per_second: 700e12,
            source: CeilingSource::Measured,
        }
    }

    fn prefill_report(ceilings: Ceilings) -> PrefillReport {
        let flops_per_token = 2.69e9;
        let tokens = PREFILL_TOKENS;
        let floor_seconds = ceilings.gemm_seconds(tokens as f64 * flops_per_token);
        let seconds = 1.0;
        PrefillReport {
            layout: "samba".to_string(),
            parameters: 1_330_000_000,
            dtype: "bf16",
            length: 1024,
            batch: 128,
            tokens,
            attention: "tensor-core",
            seconds: Some(seconds),
            tokens_per_second: Some(tokens as f64 / seconds),
            flops_per_token,
            achieved_tflops: Some(tokens as f64 * flops_per_token / seconds / 1e12),
            floor_seconds,
            fraction_of_floor: Some(floor_seconds / seconds),
            skipped: None,
            ceilings,
        }
    }

    fn decode_report(ceilings: Ceilings) -> DecodeReport {
        let (weights, state) = (2_660_000_000usize, 90_000_000usize);
        let floor_ms = 1e3 * ceilings.copy_seconds((weights + state) as f64);
        let ms = 1.25;
        DecodeReport {
            layout: "samba".to_string(),
            parameters: 1_330_000_000,
            dtype: "bf16",
            context: 1024,
            batch: 1,
            steps: 32,
            ms_per_step: Some(ms),
            eager_ms_per_step: Some(1.8),
            tokens_per_second: Some(1e3 / ms),
            graph_captured: false,
            graph_error: None,
            step: "persistent kernel",
            persistent_error: None,
            weight_bytes_per_step: weights,
            state_bytes_per_step: state,
            floor_ms,
            fraction_of_floor: Some(floor_ms / ms),
            skipped: None,
            ceilings,
        }
    }

    #[test]
    fn the_prefill_line_prints_the_gemm_rate_its_floor_used() {
        let r = prefill_report(h100());
        // 128K tokens x 2.69 GFLOP at 700 TFLOP/s.
        assert!((r.floor_seconds - 131072.0 * 2.69e9 / 700e12).abs() < 1e-12);
        assert_eq!(
            r.line(),
            "prefill samba      bf16 len   1024 x batch 128:    131072 tokens/s (1.000 s, 353 TFLOP/s); floor 0.504 s at 700 TFLOP/s:  50.4% of it [tensor-core attention]"
        );
        let h200 = prefill_report(Ceilings::h200_reference());
        assert!(h200
            .line()
            .contains("floor 0.446 s at 790 TFLOP/s:  44.6% of it"));
    }

    #[test]
    fn the_decode_line_prints_the_bandwidth_its_floor_used() {
        let r = decode_report(h100());
        // 2.75 GB at 3.0 TB/s.
        assert!((r.floor_ms - 2.75e9 / 3.0e12 * 1e3).abs() < 1e-12);
        assert_eq!(
            r.line(),
            "decode  samba      bf16 ctx   1024 batch   1:       800 tokens/s, 1.250 ms/step (eager 1.800); floor 0.917 ms (2.66 GB weights + 0.09 GB state at 3.0 TB/s):  73.3% of it [persistent kernel]"
        );
        // a step that fell back from the persistent kernel says why
        let mut graph = decode_report(h100());
        graph.step = "graph";
        graph.persistent_error = Some("SAMBA_PERSIST_ATTENTION=\"strem\": expected ...".into());
        assert!(
            graph.line().ends_with(
                "[graph; the persistent kernel did not run: SAMBA_PERSIST_ATTENTION=\"strem\": expected ...]"
            ),
            "{}",
            graph.line()
        );
        let h200 = decode_report(Ceilings::h200_reference());
        assert!(h200.line().contains("floor 0.640 ms"), "{}", h200.line());
        assert!(h200.line().contains("at 4.3 TB/s):  51.2% of it"));
    }

    #[test]
    fn reports_serialize_their_ceilings_and_device() {
        for v in [
            serde_json::to_value(prefill_report(h100())),
            serde_json::to_value(decode_report(h100())),
        ] {
            let v = v.expect("json");
            let c = &v["ceilings"];
            assert_eq!(c["device"], "NVIDIA H100 80GB HBM3");
            assert_eq!(c["copy_bytes_per_second"], 3.0e12);
            assert_eq!(c["bf16_gemm_flops_per_second"], 700e12);
            assert_eq!(c["source"], "measured");
        }
        let v = serde_json::to_value(decode_report(Ceilings::h200_reference())).expect("json");
        assert_eq!(v["ceilings"]["source"], "h200-reference");
    }

    #[test]
    fn prefill_counts_the_output_head_of_the_last_token_only() {
        let c = preset("tiny").expect("preset");
        let head = 2.0 * (c.vocab * c.d_model) as f64;
        let full = forward_flops_per_token(&c, 64);
        assert!((prefill_flops_per_token(&c, 64) - (full - head * 63.0 / 64.0)).abs() < 1e-6);
        // One token: its head is the last one, so nothing is taken off.
        assert_eq!(
            prefill_flops_per_token(&c, 1),
            forward_flops_per_token(&c, 1)
        );
    }

    #[test]
    fn an_untied_embedding_is_read_only_for_the_batch_rows() {
        let mut c = preset("tiny").expect("preset");
        let numel = ParamLayout::new(&c).numel;
        c.tied_embeddings = true;
        assert_eq!(weight_bytes_per_step(&c, numel, 2, 4), 2 * numel);
        c.tied_embeddings = false;
        let rows_not_read = c.vocab - 4;
        assert_eq!(
            weight_bytes_per_step(&c, numel, 2, 4),
            2 * (numel - rows_not_read * c.d_model)
        );
        // A batch past the vocabulary reads every row once.
        assert_eq!(weight_bytes_per_step(&c, numel, 4, c.vocab + 9), 4 * numel);
    }
}
