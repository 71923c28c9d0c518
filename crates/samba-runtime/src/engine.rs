//! [`Engine`]: a model on the CPU or a GPU, and the three ways inference runs it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use half::bf16;
use samba_cpu::{CpuModel, DecodeState};
use samba_cuda::{CudaDecodeState, CudaDevice, CudaModel};
use samba_model::checkpoint::load_model;
use samba_model::{Config, LoadedModel, ParamLayout};
use serde::Serialize;

use crate::cpu::{self, CpuState};
use crate::cuda::{self, GpuState};
use crate::device::Device;
use crate::error::{Result, RuntimeError};
use crate::state::{EngineState, Inner};

/// How a GPU stores the weights (and the activations between kernels); arithmetic, the
/// residual stream and the logits are f32 either way. bf16 is what the GPU backend is built
/// for; f32 matches the CPU to ~1e-5.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuDtype {
    #[default]
    Bf16,
    F32,
}

impl fmt::Display for GpuDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GpuDtype::Bf16 => "bf16",
            GpuDtype::F32 => "f32",
        })
    }
}

impl FromStr for GpuDtype {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<GpuDtype> {
        match s {
            "bf16" => Ok(GpuDtype::Bf16),
            "f32" => Ok(GpuDtype::F32),
            _ => Err(RuntimeError::BadDtype(s.to_string())),
        }
    }
}

/// A model on one GPU, in one storage type.
pub enum CudaEngine {
    Bf16(CudaModel<bf16>),
    F32(CudaModel<f32>),
}

impl CudaEngine {
    pub fn dtype(&self) -> GpuDtype {
        match self {
            CudaEngine::Bf16(_) => GpuDtype::Bf16,
            CudaEngine::F32(_) => GpuDtype::F32,
        }
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        match self {
            CudaEngine::Bf16(m) => m.device(),
            CudaEngine::F32(m) => m.device(),
        }
    }
}

/// A model ready for inference on the CPU or a GPU.
pub enum Engine {
    Cpu(CpuModel),
    Cuda(CudaEngine),
}

/// An engine and a state of the same backend, matched.
enum Pair<'a> {
    Cpu(&'a CpuModel, &'a mut CpuState),
    Bf16(&'a CudaModel<bf16>, &'a mut GpuState<bf16>),
    F32(&'a CudaModel<f32>, &'a mut GpuState<f32>),
}

impl Engine {
    /// A model from its config and flat f32 parameters (laid out by `ParamLayout`), on
    /// `device`; on a GPU stored as `dtype`.
    pub fn new(
        config: Config,
        params: Vec<f32>,
        device: &Device,
        dtype: GpuDtype,
    ) -> Result<Engine> {
        config.validate()?;
        let expected = ParamLayout::new(&config).numel;
        if params.len() != expected {
            return Err(RuntimeError::ParamCount {
                expected,
                found: params.len(),
            });
        }
        Ok(match device {
            Device::Cpu => Engine::Cpu(CpuModel::new(config, params)),
            Device::Cuda(dev) => Engine::Cuda(match dtype {
                GpuDtype::Bf16 => CudaEngine::Bf16(CudaModel::new(dev.clone(), config, &params)?),
                GpuDtype::F32 => CudaEngine::F32(CudaModel::new(dev.clone(), config, &params)?),
            }),
        })
    }

    /// A loaded model folder (`samba_model::checkpoint::load_model`) on `device`.
    pub fn from_loaded(loaded: LoadedModel, device: &Device, dtype: GpuDtype) -> Result<Engine> {
        Ok(match device {
            Device::Cpu => Engine::Cpu(CpuModel::from_loaded(loaded)),
            Device::Cuda(dev) => Engine::Cuda(match dtype {
                GpuDtype::Bf16 => CudaEngine::Bf16(CudaModel::from_loaded(dev.clone(), &loaded)?),
                GpuDtype::F32 => CudaEngine::F32(CudaModel::from_loaded(dev.clone(), &loaded)?),
            }),
        })
    }

    /// A model folder (config.json + model.safetensors) on `device`.
    pub fn load(dir: &Path, device: &Device, dtype: GpuDtype) -> Result<Engine> {
        Engine::from_loaded(load_model(dir)?, device, dtype)
    }

    pub fn config(&self) -> &Config {
        match self {
            Engine::Cpu(m) => &m.config,
            Engine::Cuda(CudaEngine::Bf16(m)) => &m.config,
            Engine::Cuda(CudaEngine::F32(m)) => &m.config,
        }
    }

    pub fn layout(&self) -> &ParamLayout {
        match self {
            Engine::Cpu(m) => &m.layout,
            Engine::Cuda(CudaEngine::Bf16(m)) => &m.layout,
            Engine::Cuda(CudaEngine::F32(m)) => &m.layout,
        }
    }

    /// Where the model runs: "cpu", or "cuda:0 NVIDIA H200 (bf16)".
    pub fn describe(&self) -> String {
        match self {
            Engine::Cpu(_) => "cpu".to_string(),
            Engine::Cuda(e) => format!(
                "cuda:{} {} ({})",
                e.device().ordinal(),
                e.device().name(),
                e.dtype()
            ),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Engine::Cuda(_))
    }

    /// Checks the tokens of one sequence against the vocabulary (at least one token).
    pub fn check_tokens(&self, what: &'static str, tokens: &[u32]) -> Result<()> {
        samba_cpu::error::check_tokens(what, tokens, 1, tokens.len(), self.config().vocab)?;
        Ok(())
    }

    /// The state of `batch` empty sequences; full attention (llama layout) keeps at most
    /// `max_context` positions (on the GPU its rings are allocated at that size).
    pub fn new_state(&self, batch: usize, max_context: usize) -> Result<EngineState> {
        let inner = match self {
            Engine::Cpu(m) => Inner::Cpu(CpuState::new(DecodeState::new(m, batch, max_context))),
            Engine::Cuda(CudaEngine::Bf16(m)) => {
                Inner::Bf16(GpuState::new(CudaDecodeState::new(m, batch, max_context)?))
            }
            Engine::Cuda(CudaEngine::F32(m)) => {
                Inner::F32(GpuState::new(CudaDecodeState::new(m, batch, max_context)?))
            }
        };
        Ok(EngineState { inner })
    }

    fn pair<'a>(&'a self, state: &'a mut EngineState) -> Result<Pair<'a>> {
        match (self, &mut state.inner) {
            (Engine::Cpu(m), Inner::Cpu(s)) => Ok(Pair::Cpu(m, s)),
            (Engine::Cuda(CudaEngine::Bf16(m)), Inner::Bf16(s)) => Ok(Pair::Bf16(m, s)),
            (Engine::Cuda(CudaEngine::F32(m)), Inner::F32(s)) => Ok(Pair::F32(m, s)),
            (_, inner) => Err(self.mismatch(inner.kind())),
        }
    }

    pub(crate) fn mismatch(&self, state: &'static str) -> RuntimeError {
        RuntimeError::StateMismatch {
            state,
            engine: self.describe(),
        }
    }

    /// Runs `tokens` of ONE sequence (`state` holds one) through the model in chunks of at most
    /// `chunk` tokens, advancing the state; returns the logits [vocab] of the last token.
    pub fn prefill(
        &self,
        state: &mut EngineState,
        tokens: &[u32],
        chunk: usize,
    ) -> Result<Vec<f32>> {
        self.check_tokens("tokens", tokens)?;
        match self.pair(state)? {
            Pair::Cpu(m, s) => cpu::prefill(m, s, tokens, chunk),
            Pair::Bf16(m, s) => cuda::prefill(m, s, tokens, chunk),
            Pair::F32(m, s) => cuda::prefill(m, s, tokens, chunk),
        }
    }

    /// log p(targets[i] | everything before in `state`, inputs[..=i]) (natural log) for every
    /// i: `inputs` of ONE sequence stream through the state in chunks of at most `chunk`
    /// tokens (memory does not grow with the input); `on_chunk(logprobs so far)` runs after
    /// each chunk. For next-token scoring, targets are the inputs shifted by one. On a GPU the
    /// log-probabilities are computed there; only they come back.
    pub fn score(
        &self,
        state: &mut EngineState,
        inputs: &[u32],
        targets: &[u32],
        chunk: usize,
        mut on_chunk: impl FnMut(&[f64]),
    ) -> Result<Vec<f64>> {
        if inputs.len() != targets.len() {
            return Err(RuntimeError::TargetCount {
                inputs: inputs.len(),
                targets: targets.len(),
            });
        }
        self.check_tokens("inputs", inputs)?;
        self.check_tokens("targets", targets)?;
        match self.pair(state)? {
            Pair::Cpu(m, s) => cpu::score(m, s, inputs, targets, chunk, &mut on_chunk),
            Pair::Bf16(m, s) => cuda::score(m, s, inputs, targets, chunk, &mut on_chunk),
            Pair::F32(m, s) => cuda::score(m, s, inputs, targets, chunk, &mut on_chunk),
        }
    }

    /// One decoding step of every sequence in `state`: sequence b takes `tokens[b]`; returns
    /// the logits [batch, vocab]. The step's activations stay with the state (on a GPU with
    /// the step captured as a CUDA graph, replayed from the second step on) until the batch
    /// changes.
    pub fn step(&self, state: &mut EngineState, tokens: &[u32]) -> Result<Vec<f32>> {
        match self.pair(state)? {
            Pair::Cpu(m, s) => cpu::step(m, s, tokens),
            Pair::Bf16(m, s) => cuda::step(m, s, tokens),
            Pair::F32(m, s) => cuda::step(m, s, tokens),
        }
    }
}
