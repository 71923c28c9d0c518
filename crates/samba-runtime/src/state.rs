//! [`EngineState`]: the recurrent state of a batch of sequences on an engine's device (the
//! CPU's `DecodeState` or the GPU's `CudaDecodeState`), with the same operations on both:
//! clone (branching a context), stack (batching sequences prefilled one by one) and select
//! (dropping finished sequences).

use half::bf16;
use samba_cpu::DecodeState;
use samba_cuda::{CudaDecodeState, CudaModel, Elem};

use crate::cpu::CpuState;
use crate::cuda::GpuState;
use crate::engine::{CudaEngine, Engine};
use crate::error::{Result, RuntimeError};

/// The state of `batch` sequences, each at its own position, made by [`Engine::new_state`]
/// and used with that engine only.
pub struct EngineState {
    pub(crate) inner: Inner,
}

pub(crate) enum Inner {
    Cpu(CpuState),
    Bf16(GpuState<bf16>),
    F32(GpuState<f32>),
}

impl Inner {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Inner::Cpu(_) => "cpu",
            Inner::Bf16(_) => "cuda bf16",
            Inner::F32(_) => "cuda f32",
        }
    }
}

impl std::fmt::Debug for EngineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineState")
            .field("kind", &self.inner.kind())
            .field("positions", &self.positions())
            .finish()
    }
}

impl EngineState {
    pub fn batch(&self) -> usize {
        self.positions().len()
    }

    /// Tokens each sequence has consumed.
    pub fn positions(&self) -> &[usize] {
        match &self.inner {
            Inner::Cpu(s) => s.state.positions(),
            Inner::Bf16(s) => s.state.positions(),
            Inner::F32(s) => s.state.positions(),
        }
    }

    /// Positions a full-attention layer may hold.
    pub fn max_context(&self) -> usize {
        match &self.inner {
            Inner::Cpu(s) => s.state.max_context,
            Inner::Bf16(s) => s.state.max_context,
            Inner::F32(s) => s.state.max_context,
        }
    }

    /// On a GPU, after a decoding step: what the step ran (the persistent kernel, a CUDA graph
    /// or each kernel on its own) and why not the persistent kernel where it was refused. None on
    /// the CPU and before the first step.
    pub fn decode_step_note(&self) -> Option<String> {
        match &self.inner {
            Inner::Cpu(_) => None,
            Inner::Bf16(s) => s.step.as_ref().map(|a| a.step_note()),
            Inner::F32(s) => s.step.as_ref().map(|a| a.step_note()),
        }
    }

    /// Bytes the state holds (on the GPU: as allocated, full attention's rings at full size).
    pub fn bytes(&self) -> usize {
        match &self.inner {
            Inner::Cpu(s) => s.state.bytes(),
            Inner::Bf16(s) => s.state.bytes(),
            Inner::F32(s) => s.state.bytes(),
        }
    }

    /// The CPU state, when this is one.
    pub fn as_cpu(&self) -> Option<&DecodeState> {
        match &self.inner {
            Inner::Cpu(s) => Some(&s.state),
            _ => None,
        }
    }

    /// An independent copy: the same sequences at the same positions (on a GPU, copied on the
    /// device).
    pub fn try_clone(&self, engine: &Engine) -> Result<EngineState> {
        let inner = match (engine, &self.inner) {
            (Engine::Cpu(_), Inner::Cpu(s)) => Inner::Cpu(CpuState::new(s.state.clone())),
            (Engine::Cuda(CudaEngine::Bf16(m)), Inner::Bf16(s)) => {
                Inner::Bf16(GpuState::new(s.state.try_clone(m)?))
            }
            (Engine::Cuda(CudaEngine::F32(m)), Inner::F32(s)) => {
                Inner::F32(GpuState::new(s.state.try_clone(m)?))
            }
            (_, inner) => return Err(engine.mismatch(inner.kind())),
        };
        Ok(EngineState { inner })
    }

    /// Keeps only the sequences at `rows`, in that order (drops finished sequences). The
    /// decoding step's activations are re-planned at the next step if the batch changed.
    pub fn select(&mut self, engine: &Engine, rows: &[usize]) -> Result<()> {
        let batch = self.batch();
        if let Some(&row) = rows.iter().find(|&&r| r >= batch) {
            return Err(RuntimeError::NoSuchRow { row, batch });
        }
        if rows.iter().copied().eq(0..batch) {
            return Ok(());
        }
        match (engine, &mut self.inner) {
            (Engine::Cpu(_), Inner::Cpu(s)) => s.state.select(rows),
            (Engine::Cuda(CudaEngine::Bf16(m)), Inner::Bf16(s)) => s.state.select(m, rows)?,
            (Engine::Cuda(CudaEngine::F32(m)), Inner::F32(s)) => s.state.select(m, rows)?,
            (_, inner) => return Err(engine.mismatch(inner.kind())),
        }
        Ok(())
    }

    /// The sequences of several states side by side, in order, as one batch (batched decoding
    /// of sequences prefilled one by one). On a GPU, states of a model with full attention
    /// must share their `max_context`.
    pub fn stack(engine: &Engine, states: Vec<EngineState>) -> Result<EngineState> {
        if states.is_empty() {
            return Err(RuntimeError::NothingToStack);
        }
        if let Some(bad) = states.iter().find(|s| !s.belongs_to(engine)) {
            return Err(engine.mismatch(bad.inner.kind()));
        }
        let inner = match engine {
            Engine::Cpu(_) => {
                let cpu = states.into_iter().filter_map(|s| match s.inner {
                    Inner::Cpu(s) => Some(s.state),
                    _ => None,
                });
                Inner::Cpu(CpuState::new(DecodeState::stack(cpu.collect())))
            }
            Engine::Cuda(CudaEngine::Bf16(m)) => {
                let gpu: Vec<_> = states
                    .into_iter()
                    .filter_map(|s| match s.inner {
                        Inner::Bf16(s) => Some(s.state),
                        _ => None,
                    })
                    .collect();
                Inner::Bf16(GpuState::new(stack_gpu(m, &gpu)?))
            }
            Engine::Cuda(CudaEngine::F32(m)) => {
                let gpu: Vec<_> = states
                    .into_iter()
                    .filter_map(|s| match s.inner {
                        Inner::F32(s) => Some(s.state),
                        _ => None,
                    })
                    .collect();
                Inner::F32(GpuState::new(stack_gpu(m, &gpu)?))
            }
        };
        Ok(EngineState { inner })
    }

    /// Every number of the state in the CPU's `DecodeState::flatten` order, as f32 (for
    /// comparing states, across backends too); waits for the GPU.
    pub fn flatten(&self, engine: &Engine) -> Result<Vec<f32>> {
        match (engine, &self.inner) {
            (Engine::Cpu(_), Inner::Cpu(s)) => Ok(s.state.flatten()),
            (Engine::Cuda(CudaEngine::Bf16(m)), Inner::Bf16(s)) => {
                Ok(s.state.flatten(m.device(), &m.config)?)
            }
            (Engine::Cuda(CudaEngine::F32(m)), Inner::F32(s)) => {
                Ok(s.state.flatten(m.device(), &m.config)?)
            }
            (_, inner) => Err(engine.mismatch(inner.kind())),
        }
    }

    fn belongs_to(&self, engine: &Engine) -> bool {
        matches!(
            (engine, &self.inner),
            (Engine::Cpu(_), Inner::Cpu(_))
                | (Engine::Cuda(CudaEngine::Bf16(_)), Inner::Bf16(_))
                | (Engine::Cuda(CudaEngine::F32(_)), Inner::F32(_))
        )
    }
}

fn stack_gpu<T: Elem>(
    model: &CudaModel<T>,
    states: &[CudaDecodeState<T>],
) -> Result<CudaDecodeState<T>> {
    Ok(CudaDecodeState::stack(model, states)?)
}
