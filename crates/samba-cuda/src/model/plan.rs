//! The activations of one forward shape, planned and allocated once: the f32 residual stream,
//! the normed input of the current sublayer, and one set of scratch
//! buffers per mixer kind, reused by every sublayer of that kind (inference keeps nothing for a
//! backward pass). Sizes for Samba-1.3B at 128K tokens: x 1.2 GB (f32), Mamba scratch ~7 GB,
//! MLP scratch ~5 GB (bf16).

use samba_cpu::ops::rope::RopeTable;
use samba_cpu::BatchShape;
use samba_model::layout::MixerParams;

use super::decode::{DecodeGraph, DecodeKernels};
use super::persistent::PersistentStep;
use super::CudaModel;
use crate::ops::rope::DeviceRopeTable;
use crate::{Buffer, CudaDevice, Elem, Result};

/// Which rows get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Every token: logits [batch * seq, vocab] (scoring, training).
    All,
    /// The last token of each sequence: logits [batch, vocab] (prefill before generation,
    /// decoding): the output head runs on batch rows instead of batch * seq.
    Last,
}

pub(crate) struct MambaScratch<T> {
    /// [rows, 2E]: in_proj's output [x_in | z], read in place by the conv (x_in) and scan (z).
    pub xz: Buffer<T>,
    /// [rows, E]: the conv's output.
    pub u: Buffer<T>,
    /// [rows, R + 2N]: x_proj's output [dt_low | B | C], read in place.
    pub x_dbl: Buffer<T>,
    /// [rows, E]: dt_proj(dt_low), before the bias and softplus.
    pub delta: Buffer<T>,
    /// [rows, E]: the gated scan output.
    pub y: Buffer<T>,
    /// [batch, d_conv - 1, E]: the conv state after a long chunk, copied into the state.
    pub conv_tmp: Buffer<T>,
}

pub(crate) struct AttentionScratch<T> {
    /// [rows, (H + 2G) hd]
    pub qkv: Buffer<T>,
    /// [rows, H hd]
    pub att: Buffer<T>,
    /// [batch, G]: the decoding attention's count of finished blocks (zero between steps).
    pub done: Buffer<u32>,
}

pub(crate) struct MlpScratch<T> {
    /// [rows, 2 hidden]: [gate | up] (hidden: the largest MLP of the model).
    pub gate_up: Buffer<T>,
    /// [rows, hidden]
    pub act: Buffer<T>,
}

/// Every device buffer of a forward over one (batch, seq) shape.
pub struct CudaActivations<T> {
    pub shape: BatchShape,
    pub logit_rows: LogitRows,
    pub(crate) tokens: Buffer<u32>,
    /// The residual stream [rows, d] (f32).
    pub(crate) x: Buffer<f32>,
    /// [rows, d]: RMSNorm_k(x), the current sublayer's input.
    pub(crate) normed: Buffer<T>,
    pub(crate) mamba: Option<MambaScratch<T>>,
    pub(crate) attention: Option<AttentionScratch<T>>,
    pub(crate) mlp: Option<MlpScratch<T>>,
    /// [logit rows, d]
    pub(crate) final_normed: Buffer<T>,
    /// [logit rows, vocab] (f32)
    pub logits: Buffer<f32>,
    /// RoPE for positions 0..seq (a forward without state).
    pub(crate) rope: Option<DeviceRopeTable>,
    /// The captured decoding step, once one ran with these activations.
    pub(crate) graph: Option<DecodeGraph>,
    /// Why capturing the decoding step failed, if it did (steps then run eagerly).
    pub(crate) graph_error: Option<String>,
    /// The kernels a decoding step with these activations runs.
    pub(crate) decode_kernels: DecodeKernels,
    /// The recorded persistent step, once one ran with these activations.
    pub(crate) persistent: Option<PersistentStep>,
    /// Why recording the persistent step failed, if it did (steps then run as a graph).
    pub(crate) persistent_error: Option<String>,
}

impl<T: Elem> CudaActivations<T> {
    /// The number of rows with logits.
    pub fn logit_row_count(&self) -> usize {
        match self.logit_rows {
            LogitRows::All => self.shape.rows(),
            LogitRows::Last => self.shape.batch,
        }
    }

    /// The logits of the last forward as f32 [logit rows, vocab]; waits for the GPU.
    pub fn logits_f32(&self, dev: &CudaDevice) -> Result<Vec<f32>> {
        dev.download(&self.logits)
    }

    /// Bytes of device memory these activations hold.
    pub fn bytes(&self) -> usize {
        let t = std::mem::size_of::<T>();
        let mut n = (self.tokens.len() + self.x.len() + self.logits.len()) * 4
            + (self.normed.len() + self.final_normed.len()) * t;
        if let Some(m) = &self.mamba {
            n += (m.xz.len()
                + m.u.len()
                + m.x_dbl.len()
                + m.delta.len()
                + m.y.len()
                + m.conv_tmp.len())
                * t;
        }
        if let Some(a) = &self.attention {
            n += (a.qkv.len() + a.att.len()) * t + a.done.len() * 4;
        }
        if let Some(m) = &self.mlp {
            n += (m.gate_up.len() + m.act.len()) * t;
        }
        n
    }

    /// Whether the last decoding steps replayed a CUDA graph (false until one was captured, or
    /// when capturing failed and steps run eagerly).
    pub fn graph_captured(&self) -> bool {
        self.graph.is_some()
    }

    /// Why capturing the decoding step failed, if it did.
    pub fn graph_error(&self) -> Option<&str> {
        self.graph_error.as_deref()
    }

    /// The kernels decoding steps with these activations run (from the environment at
    /// creation: [`DecodeKernels::from_env`]).
    pub fn decode_kernels(&self) -> DecodeKernels {
        self.decode_kernels
    }

    /// The kernels the next decoding step runs: the choice, with Auto resolved for this shape,
    /// and Auto's persistent step given up for the unfused one once recording it failed.
    pub(crate) fn step_kernels(&self) -> DecodeKernels {
        match self.decode_kernels.resolve(self.shape.rows()) {
            DecodeKernels::Persistent
                if self.decode_kernels == DecodeKernels::Auto
                    && self.persistent_error.is_some() =>
            {
                DecodeKernels::Unfused
            }
            k => k,
        }
    }

    /// Chooses the kernels of the next decoding steps (a recorded graph or persistent step is
    /// dropped, and recorded again by the next step).
    pub fn set_decode_kernels(&mut self, kernels: DecodeKernels) {
        if kernels != self.decode_kernels {
            self.decode_kernels = kernels;
            self.graph = None;
            self.graph_error = None;
            self.persistent = None;
            self.persistent_error = None;
        }
    }

    /// Whether the last decoding step ran as the persistent kernel.
    pub fn persistent_active(&self) -> bool {
        self.persistent.is_some()
    }

    /// The Mamba layers whose x_proj the last persistent step folded into in_proj's phase (0
    /// without a persistent step).
    pub fn persistent_folded_layers(&self) -> usize {
        self.persistent.as_ref().map_or(0, |p| p.folded_layers)
    }

    /// The MLPs whose fc2 the last persistent step folded into the SwiGLU phase (0 without a
    /// persistent step; SAMBA_PERSIST_FC2_FOLD=1).
    pub fn persistent_fc2_folded_layers(&self) -> usize {
        self.persistent.as_ref().map_or(0, |p| p.fc2_folded_layers)
    }

    /// The attention layers whose out_proj, split by heads, merged the streamed attention in the
    /// last persistent step (0 without one; SAMBA_PERSIST_ATTENTION=stream-heads).
    pub fn persistent_heads_out_proj_layers(&self) -> usize {
        self.persistent
            .as_ref()
            .map_or(0, |p| p.heads_out_proj_layers)
    }

    /// The GEMVs that read their input as tagged words in the last persistent step, by their
    /// writer's kind: after a SwiGLU (fc2), a scan step and an attention (out_proj) (zeros
    /// without one; SAMBA_PERSIST_LL, an experiment).
    pub fn persistent_ll_sites(&self) -> [usize; 3] {
        self.persistent.as_ref().map_or([0; 3], |p| p.ll_sites)
    }

    /// The streamed attention layers the last persistent step started per kv group (0 without
    /// one; SAMBA_PERSIST_ATT_READY=1, an experiment).
    pub fn persistent_attention_ready_layers(&self) -> usize {
        self.persistent
            .as_ref()
            .map_or(0, |p| p.attention_ready_layers)
    }

    /// The attention layers the last persistent step ran as streamed phases (0 without a persistent
    /// step; every one by default, none with SAMBA_PERSIST_ATTENTION=own or 1).
    pub fn persistent_streamed_attention_layers(&self) -> usize {
        self.persistent
            .as_ref()
            .map_or(0, |p| p.streamed_attention_layers)
    }

    /// Why recording the persistent step failed, if it did.
    pub fn persistent_error(&self) -> Option<&str> {
        self.persistent_error.as_deref()
    }

    /// What the last decoding step ran: "persistent kernel", "graph" (a replayed CUDA graph) or
    /// "eager" (every kernel launched on its own).
    pub fn step_kind(&self) -> &'static str {
        if self.persistent_active() {
            "persistent kernel"
        } else if self.graph_captured() {
            "graph"
        } else {
            "eager"
        }
    }

    /// [`step_kind`](Self::step_kind), and why the persistent kernel did not run where it was
    /// tried and refused.
    pub fn step_note(&self) -> String {
        describe_step(self.step_kind(), self.persistent_error())
    }
}

/// A decoding step's kernels for a person: `kind`, and `persistent_error` where the step is not
/// the persistent kernel.
pub fn describe_step(kind: &str, persistent_error: Option<&str>) -> String {
    match persistent_error {
        Some(why) if kind != "persistent kernel" => {
            format!("{kind}; the persistent kernel did not run: {why}")
        }
        _ => kind.to_string(),
    }
}

/// Bytes [`CudaModel::activations`] would allocate for this shape (to check it fits first).
pub fn activation_bytes(
    config: &samba_model::Config,
    elem_bytes: usize,
    shape: BatchShape,
    logits: LogitRows,
) -> usize {
    let plan = Plan::new(config, shape, logits);
    plan.total(elem_bytes)
}

/// Element counts of every buffer, from the config alone.
struct Plan {
    rows: usize,
    logit_rows: usize,
    d: usize,
    vocab: usize,
    mamba: Option<[usize; 6]>,
    /// qkv, att, done
    attention: Option<(usize, usize, usize)>,
    mlp_hidden: Option<usize>,
}

impl Plan {
    fn new(c: &samba_model::Config, shape: BatchShape, logits: LogitRows) -> Plan {
        let rows = shape.rows();
        let layout = samba_model::ParamLayout::new(c);
        let subs: Vec<_> = layout.blocks.iter().flatten().collect();
        let has_mamba = subs
            .iter()
            .any(|s| matches!(s.mixer, MixerParams::Mamba(_)));
        let has_attention = subs.iter().any(|s| {
            matches!(
                s.mixer,
                MixerParams::WindowAttention(_) | MixerParams::FullAttention(_)
            )
        });
        let mlp_hidden = subs
            .iter()
            .filter_map(|s| match s.mixer {
                MixerParams::Mlp(p) => Some(p.hidden),
                _ => None,
            })
            .max();
        let e = c.d_inner();
        Plan {
            rows,
            logit_rows: match logits {
                LogitRows::All => rows,
                LogitRows::Last => shape.batch,
            },
            d: c.d_model,
            vocab: c.vocab,
            mamba: has_mamba.then(|| {
                [
                    rows * 2 * e,
                    rows * e,
                    rows * c.x_proj_dim(),
                    rows * e,
                    rows * e,
                    shape.batch * (c.d_conv - 1) * e,
                ]
            }),
            attention: has_attention.then(|| {
                (
                    rows * c.qkv_dim(),
                    rows * c.heads * c.head_dim,
                    shape.batch * c.kv_heads,
                )
            }),
            mlp_hidden,
        }
    }

    fn total(&self, t: usize) -> usize {
        let mut n = self.rows * 4 + self.rows * self.d * 4 + self.logit_rows * self.vocab * 4;
        n += (self.rows * self.d + self.logit_rows * self.d) * t;
        if let Some(m) = self.mamba {
            n += m.iter().sum::<usize>() * t;
        }
        if let Some((qkv, att, done)) = self.attention {
            n += (qkv + att) * t + done * 4;
        }
        if let Some(h) = self.mlp_hidden {
            n += 3 * self.rows * h * t;
        }
        n
    }
}

impl<T: Elem> CudaModel<T> {
    /// Allocates the activations of a forward over `shape`, with logits for `logits` rows.
    pub fn activations(&self, shape: BatchShape, logits: LogitRows) -> Result<CudaActivations<T>> {
        let c = &self.config;
        let dev = &*self.dev;
        let plan = Plan::new(c, shape, logits);
        // Zero-length device buffers are avoided: every buffer holds at least one element and
        // the code slices exactly what it uses.
        let zeros_t = |n: usize| dev.zeros::<T>(n.max(1));
        let rows = plan.rows;
        let mamba = match plan.mamba {
            Some([xz, u, x_dbl, delta, y, conv_tmp]) => Some(MambaScratch {
                xz: zeros_t(xz)?,
                u: zeros_t(u)?,
                x_dbl: zeros_t(x_dbl)?,
                delta: zeros_t(delta)?,
                y: zeros_t(y)?,
                conv_tmp: zeros_t(conv_tmp)?,
            }),
            None => None,
        };
        let attention = match plan.attention {
            Some((qkv, att, done)) => Some(AttentionScratch {
                qkv: zeros_t(qkv)?,
                att: zeros_t(att)?,
                done: dev.zeros::<u32>(done.max(1))?,
            }),
            None => None,
        };
        let mlp = match plan.mlp_hidden {
            Some(h) => Some(MlpScratch {
                gate_up: zeros_t(rows * 2 * h)?,
                act: zeros_t(rows * h)?,
            }),
            None => None,
        };
        let rope = match c.rope_base {
            Some(base) => Some(DeviceRopeTable::upload(
                dev,
                &RopeTable::new(base, c.head_dim, 0, shape.seq.max(1)),
            )?),
            None => None,
        };
        Ok(CudaActivations {
            shape,
            logit_rows: logits,
            tokens: dev.zeros::<u32>(rows.max(1))?,
            x: dev.zeros::<f32>((rows * plan.d).max(1))?,
            normed: zeros_t(rows * plan.d)?,
            mamba,
            attention,
            mlp,
            final_normed: zeros_t(plan.logit_rows * plan.d)?,
            logits: dev.zeros::<f32>((plan.logit_rows * plan.vocab).max(1))?,
            rope,
            graph: None,
            graph_error: None,
            decode_kernels: DecodeKernels::from_env(),
            persistent: None,
            persistent_error: None,
        })
    }
}
