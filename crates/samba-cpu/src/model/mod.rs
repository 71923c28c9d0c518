//! The whole model on the CPU: forward over a batch, mean cross-entropy, and the hand-written
//! backward giving d loss / d every parameter, in the flat layout of `samba_model::ParamLayout`.
//!
//!   x_0     = wte[tokens]                               [rows, d], rows = batch * seq
//!   x_{k+1} = x_k + mixer_k(RMSNorm_k(x_k))            for every sublayer k of every block
//!   logits  = RMSNorm_f(x_S) @ E^T                      [rows, vocab], E = wte when tied
//!   loss    = mean_rows( logsumexp(logits) - logits[target] )
//!
//! The backward pass walks the same list in reverse. The residual stream's gradient dx flows
//! through every sublayer unchanged (d x_{k+1} / d x_k = I + d mixer / d x_k), so each sublayer
//! adds its branch's contribution into dx.
//!
//! The activations are kept in f32 unless the model is built
//! [`with_activation_storage`](CpuModel::with_activation_storage)`(ActivationStorage::Bf16)`:
//! then each is rounded to bf16 where the GPU stores it in bf16 (storage.rs lists the points),
//! the reference of the GPU's bf16 forward.

mod attention;
mod mamba;
mod mlp;
mod prefill;
mod state;
mod storage;

pub use state::DecodeState;
use state::LayerState;
pub use storage::ActivationStorage;

use samba_model::layout::{MixerParams, ParamLayout, SublayerParams, TensorId};
use samba_model::{Config, LoadedModel};

use crate::error::CpuError;
use crate::ops::cross_entropy::{cross_entropy_bwd, cross_entropy_fwd};
use crate::ops::embedding::{embedding_bwd, embedding_fwd};
use crate::ops::matmul::{linear_bwd, linear_fwd, LinearDims};
use crate::ops::rmsnorm::{rmsnorm_bwd, rmsnorm_fwd};
use crate::ops::rope::RopeTable;
use attention::{attention_sublayer_bwd, attention_sublayer_fwd, AttentionActs};
use mamba::{mamba_bwd, mamba_fwd, MambaActs};
use mlp::{mlp_bwd, mlp_fwd, MlpActs};

/// The shape of one forward pass: `batch` sequences of `seq` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    pub batch: usize,
    pub seq: usize,
}

impl BatchShape {
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }
}

/// What a sublayer's forward reads: the model and the batch shape.
pub(crate) struct Ctx<'a> {
    pub config: &'a Config,
    pub layout: &'a ParamLayout,
    pub params: &'a [f32],
    pub shape: BatchShape,
    /// Positions 0..seq; `None` for NoPE.
    pub rope: Option<&'a RopeTable>,
    /// How each activation is stored after the op that writes it.
    pub storage: ActivationStorage,
}

impl Ctx<'_> {
    pub fn tensor(&self, id: TensorId) -> &[f32] {
        self.layout.slice(self.params, id)
    }
}

/// Where a sublayer's backward adds its parameter gradients.
pub(crate) struct GradCtx<'a> {
    pub layout: &'a ParamLayout,
    pub grads: &'a mut [f32],
}

impl GradCtx<'_> {
    pub fn tensor(&mut self, id: TensorId) -> &mut [f32] {
        self.layout.slice_mut(self.grads, id)
    }

    /// Several distinct tensors' gradients at once.
    pub fn tensors<const K: usize>(&mut self, ids: [TensorId; K]) -> [&mut [f32]; K] {
        let mut order: Vec<usize> = (0..K).collect();
        order.sort_by_key(|&i| self.layout.spec(ids[i]).offset);
        let mut slots: [Option<&mut [f32]>; K] = std::array::from_fn(|_| None);
        let mut rest: &mut [f32] = self.grads;
        let mut consumed = 0;
        for i in order {
            let range = self.layout.spec(ids[i]).range();
            assert!(
                range.start >= consumed,
                "GradCtx::tensors: the same tensor twice"
            );
            let (_, tail) = rest.split_at_mut(range.start - consumed);
            let (this, tail) = tail.split_at_mut(range.len());
            slots[i] = Some(this);
            rest = tail;
            consumed = range.end;
        }
        slots.map(|s| s.expect("every slot filled"))
    }
}

enum MixerActs {
    Mamba(MambaActs),
    Attention(AttentionActs),
    Mlp(MlpActs),
}

/// Every buffer of one forward pass of a given shape, allocated once and reused.
pub struct Activations {
    pub shape: BatchShape,
    tokens: Vec<u32>,
    rope: Option<RopeTable>,
    /// residual[k] is the stream entering sublayer k; the last one feeds the final norm.
    residual: Vec<Vec<f32>>,
    normed: Vec<Vec<f32>>,
    rstd: Vec<Vec<f32>>,
    mixers: Vec<MixerActs>,
    final_normed: Vec<f32>,
    final_rstd: Vec<f32>,
    /// [rows, vocab] after [`CpuModel::forward`].
    pub logits: Vec<f32>,
    /// Per-row cross-entropy and log-sum-exp of the logits, after [`CpuModel::loss`].
    pub losses: Vec<f32>,
    pub lse: Vec<f32>,
}

/// A model held on the CPU in f32.
pub struct CpuModel {
    pub config: Config,
    pub layout: ParamLayout,
    pub params: Vec<f32>,
    /// f32 unless set by [`with_activation_storage`](Self::with_activation_storage).
    pub activation_storage: ActivationStorage,
}

fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

impl CpuModel {
    pub fn new(config: Config, params: Vec<f32>) -> CpuModel {
        let layout = ParamLayout::new(&config);
        assert_eq!(params.len(), layout.numel, "parameter buffer size");
        CpuModel {
            config,
            layout,
            params,
            activation_storage: ActivationStorage::F32,
        }
    }

    pub fn from_loaded(loaded: LoadedModel) -> CpuModel {
        CpuModel {
            config: loaded.config,
            layout: loaded.layout,
            params: loaded.params,
            activation_storage: ActivationStorage::F32,
        }
    }

    /// The same model storing its activations as `storage` does: `Bf16` makes it the
    /// reference of a GPU forward in bf16 (see [`ActivationStorage`]).
    pub fn with_activation_storage(mut self, storage: ActivationStorage) -> CpuModel {
        self.activation_storage = storage;
        self
    }

    fn sublayers(&self) -> impl Iterator<Item = &SublayerParams> {
        self.layout.blocks.iter().flatten()
    }

    fn ctx<'a>(&'a self, shape: BatchShape, rope: Option<&'a RopeTable>) -> Ctx<'a> {
        Ctx {
            config: &self.config,
            layout: &self.layout,
            params: &self.params,
            shape,
            rope,
            storage: self.activation_storage,
        }
    }

    /// Allocates the activations of a forward pass over `shape`.
    pub fn activations(&self, shape: BatchShape) -> Activations {
        let c = &self.config;
        let (rows, d) = (shape.rows(), c.d_model);
        let rope = c
            .rope_base
            .map(|base| RopeTable::new(base, c.head_dim, 0, shape.seq));
        let ctx = self.ctx(shape, None);
        let mixers: Vec<MixerActs> = self
            .sublayers()
            .map(|s| match s.mixer {
                MixerParams::Mamba(_) => MixerActs::Mamba(MambaActs::new(&ctx)),
                MixerParams::WindowAttention(_) | MixerParams::FullAttention(_) => {
                    MixerActs::Attention(AttentionActs::new(&ctx))
                }
                MixerParams::Mlp(p) => MixerActs::Mlp(MlpActs::new(rows, p.hidden)),
            })
            .collect();
        let n = mixers.len();
        Activations {
            shape,
            tokens: vec![0; rows],
            rope,
            residual: (0..=n).map(|_| vec![0.0; rows * d]).collect(),
            normed: (0..n).map(|_| vec![0.0; rows * d]).collect(),
            rstd: (0..n).map(|_| vec![0.0; rows]).collect(),
            mixers,
            final_normed: vec![0.0; rows * d],
            final_rstd: vec![0.0; rows],
            logits: vec![0.0; rows * c.vocab],
            losses: vec![0.0; rows],
            lse: vec![0.0; rows],
        }
    }

    /// Checks a token list of `expected` entries against the vocabulary.
    pub fn check_tokens(
        &self,
        what: &'static str,
        tokens: &[u32],
        shape: BatchShape,
    ) -> Result<(), CpuError> {
        crate::error::check_tokens(what, tokens, shape.batch, shape.seq, self.config.vocab)
    }

    /// Runs the model over `tokens` [batch, seq]; the logits land in `acts.logits`.
    pub fn forward(&self, acts: &mut Activations, tokens: &[u32]) -> Result<(), CpuError> {
        self.forward_inner(acts, tokens, None)
    }

    /// Runs the model over the next chunk `tokens` [batch, seq] of the sequences in `state`,
    /// which holds everything the earlier chunks left (see [`DecodeState`]) and is advanced
    /// past this chunk. The logits land in `acts.logits`. Chunk after chunk gives the same
    /// logits as one [`forward`](Self::forward) over the whole sequence; a chunk of one token
    /// is a decoding step.
    pub fn forward_with_state(
        &self,
        acts: &mut Activations,
        tokens: &[u32],
        state: &mut DecodeState,
    ) -> Result<(), CpuError> {
        if state.batch() != acts.shape.batch {
            return Err(CpuError::BatchMismatch {
                state: state.batch(),
                batch: acts.shape.batch,
            });
        }
        state.check_room(acts.shape.seq)?;
        self.forward_inner(acts, tokens, Some(&mut *state))?;
        state
            .positions
            .iter_mut()
            .for_each(|p| *p += acts.shape.seq);
        Ok(())
    }

    fn forward_inner(
        &self,
        acts: &mut Activations,
        tokens: &[u32],
        mut state: Option<&mut DecodeState>,
    ) -> Result<(), CpuError> {
        self.check_tokens("tokens", tokens, acts.shape)?;
        let c = &self.config;
        let Activations {
            shape,
            tokens: saved_tokens,
            rope,
            residual,
            normed,
            rstd,
            mixers,
            final_normed,
            final_rstd,
            logits,
            ..
        } = acts;
        saved_tokens.copy_from_slice(tokens);
        let ctx = self.ctx(*shape, rope.as_ref());

        embedding_fwd(
            &mut residual[0],
            tokens,
            ctx.tensor(self.layout.wte),
            c.d_model,
        );
        for (k, sub) in self.sublayers().enumerate() {
            let (before, after) = residual.split_at_mut(k + 1);
            let (x, next) = (&before[k], &mut after[0]);
            rmsnorm_fwd(
                &mut normed[k],
                &mut rstd[k],
                x,
                ctx.tensor(sub.norm),
                c.norm_eps,
            );
            ctx.storage.store(&mut normed[k]);
            let xn = &normed[k];
            let (layer, positions) = match state.as_deref_mut() {
                Some(s) => (Some(&mut s.layers[k]), s.positions.as_slice()),
                None => (None, &[][..]),
            };
            let (mamba_state, cache) = match layer {
                Some(LayerState::Mamba { conv, ssm }) => {
                    (Some((conv.as_mut_slice(), ssm.as_mut_slice())), None)
                }
                Some(LayerState::Attention { caches }) => {
                    (None, Some((caches.as_mut_slice(), positions)))
                }
                _ => (None, None),
            };
            match (&sub.mixer, &mut mixers[k]) {
                (MixerParams::Mamba(p), MixerActs::Mamba(a)) => {
                    mamba_fwd(&ctx, p, next, a, xn, mamba_state)
                }
                (MixerParams::WindowAttention(p), MixerActs::Attention(a)) => {
                    attention_sublayer_fwd(&ctx, p, Some(c.window), next, a, xn, cache)
                }
                (MixerParams::FullAttention(p), MixerActs::Attention(a)) => {
                    attention_sublayer_fwd(&ctx, p, None, next, a, xn, cache)
                }
                (MixerParams::Mlp(p), MixerActs::Mlp(a)) => mlp_fwd(&ctx, p, next, a, xn),
                _ => unreachable!("activations are built from the same layout"),
            }
            add_into(next, x);
        }
        let last = residual.last().expect("at least the embedding");
        rmsnorm_fwd(
            final_normed,
            final_rstd,
            last,
            ctx.tensor(self.layout.ln_f),
            c.norm_eps,
        );
        ctx.storage.store(final_normed);
        let head = LinearDims {
            rows: shape.rows(),
            in_features: c.d_model,
            out_features: c.vocab,
        };
        linear_fwd(
            logits,
            final_normed,
            ctx.tensor(self.layout.output_embedding()),
            head,
        );
        Ok(())
    }

    /// Mean cross-entropy of `targets` [batch, seq] under the logits of the last forward.
    pub fn loss(&self, acts: &mut Activations, targets: &[u32]) -> Result<f32, CpuError> {
        self.check_tokens("targets", targets, acts.shape)?;
        cross_entropy_fwd(
            &mut acts.losses,
            &mut acts.lse,
            &acts.logits,
            targets,
            self.config.vocab,
        );
        let sum: f64 = acts.losses.iter().map(|&l| l as f64).sum();
        Ok((sum / acts.losses.len() as f64) as f32)
    }

    /// Adds d mean-loss / d params into `grads` (flat, laid out like `params`), from the
    /// activations of the last [`forward`](Self::forward) and [`loss`](Self::loss).
    pub fn backward(&self, acts: &Activations, targets: &[u32], grads: &mut [f32]) {
        assert_eq!(grads.len(), self.layout.numel, "gradient buffer size");
        let c = &self.config;
        let shape = acts.shape;
        let rows = shape.rows();
        let ctx = self.ctx(shape, acts.rope.as_ref());
        let mut g = GradCtx {
            layout: &self.layout,
            grads,
        };

        // loss = mean(CE(logits, targets))
        let mut dlogits = vec![0.0; rows * c.vocab];
        cross_entropy_bwd(
            &mut dlogits,
            &acts.logits,
            &acts.lse,
            targets,
            1.0 / rows as f32,
            c.vocab,
        );
        // logits = final_normed @ E^T
        let head = LinearDims {
            rows,
            in_features: c.d_model,
            out_features: c.vocab,
        };
        let embedding = self.layout.output_embedding();
        let mut dfinal = vec![0.0; rows * c.d_model];
        linear_bwd(
            Some(&mut dfinal),
            g.tensor(embedding),
            &dlogits,
            &acts.final_normed,
            ctx.tensor(embedding),
            head,
        );
        drop(dlogits);
        // final_normed = RMSNorm_f(x_S)
        let mut dx = vec![0.0; rows * c.d_model];
        let last = acts.residual.last().expect("at least the embedding");
        rmsnorm_bwd(
            &mut dx,
            g.tensor(self.layout.ln_f),
            &dfinal,
            last,
            ctx.tensor(self.layout.ln_f),
            &acts.final_rstd,
        );

        // x_{k+1} = x_k + mixer_k(xn_k), xn_k = RMSNorm_k(x_k)
        let subs: Vec<&SublayerParams> = self.sublayers().collect();
        let mut dxn = vec![0.0; rows * c.d_model];
        for k in (0..subs.len()).rev() {
            let sub = subs[k];
            dxn.fill(0.0);
            let xn = &acts.normed[k];
            match (&sub.mixer, &acts.mixers[k]) {
                (MixerParams::Mamba(p), MixerActs::Mamba(a)) => {
                    mamba_bwd(&ctx, &mut g, p, &mut dxn, &dx, a, xn)
                }
                (MixerParams::WindowAttention(p), MixerActs::Attention(a)) => {
                    attention_sublayer_bwd(&ctx, &mut g, p, Some(c.window), &mut dxn, &dx, a, xn)
                }
                (MixerParams::FullAttention(p), MixerActs::Attention(a)) => {
                    attention_sublayer_bwd(&ctx, &mut g, p, None, &mut dxn, &dx, a, xn)
                }
                (MixerParams::Mlp(p), MixerActs::Mlp(a)) => {
                    mlp_bwd(&ctx, &mut g, p, &mut dxn, &dx, a, xn)
                }
                _ => unreachable!("activations are built from the same layout"),
            }
            rmsnorm_bwd(
                &mut dx,
                g.tensor(sub.norm),
                &dxn,
                &acts.residual[k],
                ctx.tensor(sub.norm),
                &acts.rstd[k],
            );
        }
        // x_0 = wte[tokens]
        embedding_bwd(g.tensor(self.layout.wte), &dx, &acts.tokens, c.d_model);
    }

    /// Logits [batch, seq, vocab] of `tokens`, allocating the activations for this call.
    pub fn logits(&self, tokens: &[u32], shape: BatchShape) -> Result<Vec<f32>, CpuError> {
        let mut acts = self.activations(shape);
        self.forward(&mut acts, tokens)?;
        Ok(acts.logits)
    }

    /// Mean loss and its gradient wrt every parameter (a fresh buffer) for one batch.
    pub fn loss_and_grad(
        &self,
        inputs: &[u32],
        targets: &[u32],
        shape: BatchShape,
    ) -> Result<(f32, Vec<f32>), CpuError> {
        let mut acts = self.activations(shape);
        self.forward(&mut acts, inputs)?;
        let loss = self.loss(&mut acts, targets)?;
        let mut grads = vec![0.0; self.layout.numel];
        self.backward(&acts, targets, &mut grads);
        Ok((loss, grads))
    }
}
