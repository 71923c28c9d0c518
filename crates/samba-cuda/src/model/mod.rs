//! The whole model on the GPU: the same forward as `samba_cpu::CpuModel`, for inference.
//!
//!   x_0     = wte[tokens]                               [rows, d] f32, rows = batch * seq
//!   x_{k+1} = x_k + mixer_k(RMSNorm_k(x_k))            for every sublayer k of every block
//!   logits  = RMSNorm_f(x_S) @ E^T                      [rows (or batch), vocab], E = wte when tied
//!
//! - The parameters live in ONE device buffer of the storage type T (f32, or bf16 for speed),
//!   in the flat order of `samba_model::ParamLayout`; every tensor is a view of it.
//! - The activations of a (batch, seq) shape are planned and allocated once
//!   ([`CudaActivations`]); one set of scratch buffers serves every sublayer in turn (inference
//!   keeps nothing for a backward pass). The residual stream stays in f32: each sublayer's output
//!   projection adds into it directly (a GEMM with an f32 output and beta = 1), so the branch is
//!   never rounded to T; the logits are f32 too.
//! - [`CudaModel::forward_with_state`] runs a chunk of longer sequences with their
//!   [`CudaDecodeState`] (conv and SSM states, key/value rings, positions, all on the device), as
//!   the CPU's `forward_with_state`; [`CudaModel::decode_step`] is the one-token case, captured
//!   into a CUDA graph and replayed.
//!
//! Nothing inside a forward copies to the host or waits for the GPU: tokens go up before it,
//! logits come down after it ([`CudaActivations::logits_f32`]).

mod attention;
mod attention_ready;
mod decode;
mod fc2_fold;
mod fused;
mod heads_out_proj;
mod ll_inputs;
mod mamba;
mod mlp;
mod persistent;
mod plan;
mod state;
mod streamed_attention;
mod xproj_fold;

pub use attention_ready::enabled as persistent_attention_ready_enabled;
pub use decode::DecodeKernels;
pub use ll_inputs::enabled as persistent_ll_enabled;
pub use plan::{activation_bytes, describe_step, CudaActivations, LogitRows};
pub use state::CudaDecodeState;

use std::sync::Arc;

use cudarc::driver::CudaView;
use samba_cpu::ops::matmul::LinearDims;
use samba_model::layout::{MixerParams, ParamLayout, SublayerParams, TensorId};
use samba_model::{Config, LoadedModel};

use crate::error::{CudaError, Result};
use crate::ops::attention::AttentionKernel;
use crate::ops::kv_cache::positions_advance;
use crate::ops::matmul::linear_fwd_into_f32;
use crate::ops::residual::{embedding_residual_fwd, residual_rmsnorm_fwd, Rows};
use crate::{Buffer, CudaDevice, Elem};

/// Values converted and uploaded per copy when the parameters go to the device (bounds the
/// host memory of the conversion to f32 -> T).
const UPLOAD_CHUNK: usize = 1 << 26;

/// A model held on one GPU in storage T (f32 or bf16); arithmetic in f32.
pub struct CudaModel<T: Elem> {
    dev: Arc<CudaDevice>,
    pub config: Config,
    pub layout: ParamLayout,
    /// Every parameter, in the layout's flat order.
    params: Buffer<T>,
    /// Which kernel runs prefill attention (tests pin one; `Auto` picks the tensor cores).
    pub attention_kernel: AttentionKernel,
}

impl<T: Elem> CudaModel<T> {
    /// Uploads `params` (flat f32, laid out by `ParamLayout::new(&config)`), converted to T.
    pub fn new(dev: Arc<CudaDevice>, config: Config, params: &[f32]) -> Result<CudaModel<T>> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        if params.len() != layout.numel {
            return Err(CudaError::ParamCount {
                expected: layout.numel,
                found: params.len(),
            });
        }
        check_mlp_adjacency(&layout)?;
        let mut buf = dev.zeros::<T>(layout.numel)?;
        for (i, chunk) in params.chunks(UPLOAD_CHUNK).enumerate() {
            let host: Vec<T> = chunk.iter().map(|&v| T::from_f32(v)).collect();
            let start = i * UPLOAD_CHUNK;
            let mut view = buf.slice_mut(start..start + chunk.len());
            dev.stream()
                .memcpy_htod(&host, &mut view)
                .map_err(crate::error::driver("copying the parameters to the device"))?;
        }
        Ok(CudaModel {
            dev,
            config,
            layout,
            params: buf,
            attention_kernel: AttentionKernel::Auto,
        })
    }

    /// A model folder's weights (`samba_model::checkpoint::load_model`) on the device.
    pub fn from_loaded(dev: Arc<CudaDevice>, loaded: &LoadedModel) -> Result<CudaModel<T>> {
        CudaModel::new(dev, loaded.config.clone(), &loaded.params)
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Bytes of the parameters on the device.
    pub fn weight_bytes(&self) -> usize {
        self.layout.numel * std::mem::size_of::<T>()
    }

    /// The view of one parameter tensor.
    pub(crate) fn tensor(&self, id: TensorId) -> CudaView<'_, T> {
        self.params.slice(self.layout.spec(id).range())
    }

    /// `count` consecutive elements of the parameter buffer from tensor `id`'s first one (the
    /// stacked [w1; w2] of an MLP).
    pub(crate) fn span(&self, id: TensorId, count: usize) -> CudaView<'_, T> {
        let start = self.layout.spec(id).offset;
        self.params.slice(start..start + count)
    }

    /// The `len` parameters at device address `ptr` (a recorded launch's weight), downloaded; None
    /// unless they lie whole inside the parameter buffer. (The persistent step's folds make
    /// re-laid-out copies of weights from their recorded addresses.)
    pub(crate) fn download_params_at(&self, ptr: u64, len: usize) -> Result<Option<Vec<T>>> {
        use cudarc::driver::DevicePtr;
        let elem = std::mem::size_of::<T>() as u64;
        let offset = {
            let (base, _guard) = self.params.device_ptr(self.dev.stream());
            if ptr < base || (ptr - base) % elem != 0 {
                return Ok(None);
            }
            ((ptr - base) / elem) as usize
        };
        if offset + len > self.params.len() {
            return Ok(None);
        }
        self.dev
            .download(&self.params.slice(offset..offset + len))
            .map(Some)
    }

    fn sublayers(&self) -> impl Iterator<Item = &SublayerParams> {
        self.layout.blocks.iter().flatten()
    }

    /// Checks a token list of `rows` entries against the vocabulary.
    fn check_tokens(&self, tokens: &[u32], acts: &CudaActivations<T>) -> Result<()> {
        let shape = acts.shape;
        samba_cpu::error::check_tokens(
            "tokens",
            tokens,
            shape.batch,
            shape.seq,
            self.config.vocab,
        )?;
        Ok(())
    }

    /// Checks the tokens and copies them to the activations' token buffer.
    fn upload_tokens(&self, acts: &mut CudaActivations<T>, tokens: &[u32]) -> Result<()> {
        self.check_tokens(tokens, acts)?;
        self.dev
            .stream()
            .memcpy_htod(tokens, &mut acts.tokens)
            .map_err(crate::error::driver("copying the tokens to the device"))
    }

    /// Runs the model over `tokens` [batch, seq] (positions 0..seq); the logits land in
    /// `acts.logits` (download with [`CudaActivations::logits_f32`]).
    pub fn forward(&self, acts: &mut CudaActivations<T>, tokens: &[u32]) -> Result<()> {
        self.upload_tokens(acts, tokens)?;
        self.run(acts, None)
    }

    /// Runs the model over the next chunk `tokens` [batch, seq] of the sequences in `state`,
    /// which holds everything the earlier chunks left and is advanced past this chunk, as the
    /// CPU's `forward_with_state`: chunk after chunk gives the logits of one forward over the
    /// whole sequence.
    pub fn forward_with_state(
        &self,
        acts: &mut CudaActivations<T>,
        tokens: &[u32],
        state: &mut CudaDecodeState<T>,
    ) -> Result<()> {
        self.prepare_state(acts, state)?;
        self.upload_tokens(acts, tokens)?;
        self.run(acts, Some(state))?;
        state.advance_host(acts.shape.seq);
        Ok(())
    }

    /// Checks that `state` can take the chunk of `acts` and grows its RoPE table if needed.
    fn prepare_state(
        &self,
        acts: &CudaActivations<T>,
        state: &mut CudaDecodeState<T>,
    ) -> Result<()> {
        if state.batch() != acts.shape.batch {
            return Err(samba_cpu::CpuError::BatchMismatch {
                state: state.batch(),
                batch: acts.shape.batch,
            }
            .into());
        }
        state.check_room(acts.shape.seq)?;
        state.ensure_rope(&self.dev, &self.config, acts.shape.seq)
    }

    /// Queues the whole forward on the device's stream: tokens are in `acts.tokens`; with a
    /// state, every sequence's position is read on the device and advanced there at the end (the
    /// host copy is the caller's to advance). Nothing here waits for the GPU, so this is what a
    /// CUDA graph captures.
    fn run(
        &self,
        acts: &mut CudaActivations<T>,
        mut state: Option<&mut CudaDecodeState<T>>,
    ) -> Result<()> {
        let c = &self.config;
        let dev = &*self.dev;
        let shape = acts.shape;
        embedding_residual_fwd(
            dev,
            &mut acts.x,
            &acts.tokens,
            &self.tensor(self.layout.wte),
            c.d_model,
        )?;
        // A decoding step (one token per sequence, a few sequences) runs the fused sublayers.
        let fused = state.is_some() && fused::applies(self, acts);
        for (k, sub) in self.sublayers().enumerate() {
            if let (true, Some(s)) = (fused, state.as_deref_mut()) {
                fused::sublayer(self, acts, sub, s.layer(k))?;
                continue;
            }
            // normed = RMSNorm_k(x); the mixer then adds its output into x.
            residual_rmsnorm_fwd(
                dev,
                &mut acts.x,
                &mut acts.normed,
                None,
                &self.tensor(sub.norm),
                Rows::All,
                c.norm_eps,
            )?;
            let layer = state.as_deref_mut().map(|s| s.layer(k));
            match sub.mixer {
                MixerParams::Mamba(p) => mamba::forward(self, acts, &p, layer)?,
                MixerParams::WindowAttention(p) => {
                    attention::forward(self, acts, &p, Some(c.window), layer)?
                }
                MixerParams::FullAttention(p) => attention::forward(self, acts, &p, None, layer)?,
                MixerParams::Mlp(p) => mlp::forward(self, acts, &p)?,
            }
        }
        if fused {
            fused::head(self, acts)?;
            if let Some(s) = state {
                positions_advance(dev, s.positions_buffer(), shape.seq)?;
            }
            return Ok(());
        }
        // final_normed = RMSNorm_f(x_S) on the rows whose logits are wanted
        let rows = match acts.logit_rows {
            LogitRows::All => Rows::All,
            LogitRows::Last => Rows::LastOfEach { seq: shape.seq },
        };
        residual_rmsnorm_fwd(
            dev,
            &mut acts.x,
            &mut acts.final_normed,
            None,
            &self.tensor(self.layout.ln_f),
            rows,
            c.norm_eps,
        )?;
        // logits = final_normed @ E^T (f32)
        let head = LinearDims {
            rows: acts.logit_row_count(),
            in_features: c.d_model,
            out_features: c.vocab,
        };
        linear_fwd_into_f32(
            dev,
            &mut acts.logits,
            c.vocab,
            &acts.final_normed,
            c.d_model,
            &self.tensor(self.layout.output_embedding()),
            head,
            false,
        )?;
        if let Some(s) = state {
            positions_advance(dev, s.positions_buffer(), shape.seq)?;
        }
        Ok(())
    }
}

/// The MLP's gate and up projections run as one GEMM over [w1; w2], which needs w2 right after
/// w1 in the parameter buffer (as `ParamLayout` builds it).
fn check_mlp_adjacency(layout: &ParamLayout) -> Result<()> {
    for sub in layout.blocks.iter().flatten() {
        if let MixerParams::Mlp(p) = sub.mixer {
            let (w1, w2) = (layout.spec(p.w1), layout.spec(p.w2));
            if w1.offset + w1.numel() != w2.offset {
                return Err(CudaError::Unsupported {
                    op: "CudaModel::new",
                    reason: format!(
                        "{} does not follow {} in the parameter layout",
                        w2.name, w1.name
                    ),
                });
            }
        }
    }
    Ok(())
}
