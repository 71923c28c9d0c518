//! The decoding step: one token per sequence through the whole model, with the state, as one
//! CUDA graph, or as persistent kernels (persistent.rs: [`DecodeKernels::Persistent`], and the
//! default, [`DecodeKernels::Auto`], at batch 1). Samba-1.3B's unfused step is ~220 kernels and
//! GEMMs; launched one by one their launch gaps alone would take about half of the ~0.6 ms a step
//! may take at the bandwidth floor, so the step is captured once and replayed.
//!
//! A graph holds the addresses it was captured with: the activations (tokens in, logits out),
//! the weights, the state's buffers and its RoPE table. Everything that moves between steps
//! lives in those buffers (tokens are copied in before the replay, positions are read and
//! advanced on the device), so one graph serves every later step of the same (activations,
//! state) pair; a new state, or a RoPE table grown past its length, takes a new capture.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use super::persistent::PersistentStep;
use super::plan::CudaActivations;
use super::state::CudaDecodeState;
use super::CudaModel;
use crate::error::{driver, CudaError, Result};
use crate::Elem;

/// The kernels of a decoding step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeKernels {
    /// Norms, cuBLAS GEMMs and elementwise kernels (~230 kernels for Samba-1.3B), as a graph.
    Unfused,
    /// Each sublayer on GEMV kernels with its elementwise work fused in (fused.rs; ~100
    /// kernels), as a graph.
    Fused,
    /// The fused step's kernels as phases of persistent kernels (persistent.rs; batch 1). Falls
    /// back to the fused graph where a step has a kernel the persistent kernel does not run.
    Persistent,
    /// The fastest measured on the H200 (docs/gpu.md): persistent at batch 1, unfused above it
    /// and where the persistent step cannot be recorded (a GPU before sm_90, a sublayer it does
    /// not run).
    Auto,
}

impl DecodeKernels {
    /// `SAMBA_DECODE=auto|unfused|fused|persistent`; also `SAMBA_FUSED_DECODE=1` (fused). Auto
    /// without either.
    pub fn from_env() -> DecodeKernels {
        match std::env::var("SAMBA_DECODE").as_deref() {
            Ok("persistent") => DecodeKernels::Persistent,
            Ok("fused") => DecodeKernels::Fused,
            Ok("unfused") => DecodeKernels::Unfused,
            _ if std::env::var("SAMBA_FUSED_DECODE").is_ok_and(|v| v == "1") => {
                DecodeKernels::Fused
            }
            _ => DecodeKernels::Auto,
        }
    }

    /// The kernels a step of `rows` sequences runs with this choice: Auto resolved to Persistent
    /// (one row) or Unfused.
    pub(crate) fn resolve(self, rows: usize) -> DecodeKernels {
        match self {
            DecodeKernels::Auto if rows == 1 => DecodeKernels::Persistent,
            DecodeKernels::Auto => DecodeKernels::Unfused,
            k => k,
        }
    }
}

pub(crate) struct DecodeGraph {
    graph: CudaGraph,
    state_id: u64,
    rope_generation: u64,
}

impl<T: Elem> CudaModel<T> {
    /// One decoding step: sequence b of `state` takes `tokens[b]`; the logits [batch, vocab]
    /// land in `acts.logits` (activations of shape (batch, 1)). The same as
    /// [`forward_with_state`](Self::forward_with_state) with one token, run as a CUDA graph: the
    /// first step with these activations and this state runs eagerly and then captures the step;
    /// later steps replay the capture. Where capturing fails (or `SAMBA_CUDA_GRAPHS=0`) every
    /// step runs eagerly; [`CudaActivations::graph_captured`] tells which.
    pub fn decode_step(
        &self,
        acts: &mut CudaActivations<T>,
        tokens: &[u32],
        state: &mut CudaDecodeState<T>,
    ) -> Result<()> {
        if acts.shape.seq != 1 {
            return Err(CudaError::Unsupported {
                op: "decode_step",
                reason: format!(
                    "decoding takes activations of one token per sequence, these are for {}",
                    acts.shape.seq
                ),
            });
        }
        self.prepare_state(acts, state)?;
        self.upload_tokens(acts, tokens)?;
        let same_state =
            |id: u64, generation: u64| id == state.id && generation == state.rope_generation;
        let replay = acts
            .graph
            .as_ref()
            .is_some_and(|g| same_state(g.state_id, g.rope_generation));
        let persistent = acts
            .persistent
            .as_mut()
            .filter(|p| same_state(p.state_id, p.rope_generation));
        if let Some(p) = persistent {
            p.launch(self)?;
        } else if let (true, Some(g)) = (replay, acts.graph.as_ref()) {
            g.graph
                .launch()
                .map_err(driver("replaying the decoding graph"))?;
        } else {
            acts.graph = None;
            acts.persistent = None;
            self.run(acts, Some(&mut *state))?;
            // (a failed recording is not retried; under Auto it turns the step unfused: the
            // faster of the two graphs, `CudaActivations::step_kernels`)
            if acts.step_kernels() == DecodeKernels::Persistent && acts.persistent_error.is_none() {
                match PersistentStep::record(self, acts, state) {
                    Ok(p) => acts.persistent = Some(p),
                    Err(e) => acts.persistent_error = Some(e.to_string()),
                }
            }
            let graphs_on = std::env::var("SAMBA_CUDA_GRAPHS").map_or(true, |v| v != "0");
            if acts.persistent.is_none() && graphs_on && acts.graph_error.is_none() {
                match self.capture(acts, state) {
                    Ok(graph) => {
                        acts.graph = Some(DecodeGraph {
                            graph,
                            state_id: state.id,
                            rope_generation: state.rope_generation,
                        })
                    }
                    Err(e) => acts.graph_error = Some(e.to_string()),
                }
            }
        }
        state.advance_host(1);
        Ok(())
    }

    /// Records one step (without running it) into a graph.
    fn capture(
        &self,
        acts: &mut CudaActivations<T>,
        state: &mut CudaDecodeState<T>,
    ) -> Result<CudaGraph> {
        let stream = self.device().stream();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver("starting to capture the decoding step"))?;
        let recorded = self.run(acts, Some(state));
        // The capture is ended whatever happened, so the stream leaves capture mode.
        let ended = stream.end_capture(CUgraphInstantiate_flags(0));
        recorded?;
        ended
            .map_err(driver("capturing the decoding step"))?
            .ok_or_else(|| CudaError::Unsupported {
                op: "decode_step",
                reason: "capturing the decoding step gave an empty graph".into(),
            })
    }
}
