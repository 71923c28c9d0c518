//! Where every parameter lives: reference names, shapes, and offsets into one flat buffer.
//!
//! All parameters of a model sit in one contiguous `[f32]` (and so do their gradients and the
//! optimizer moments), in the order built here: `transformer.wte.weight`, then block by block in
//! reference key order, then `transformer.ln_f.weight`, then `lm_head.weight` when it is not tied.
//! A fused optimizer step or a data-parallel all-reduce is then one pass over one buffer.

use crate::config::{Config, Layout, Sublayer};

/// Index of a tensor in [`ParamLayout::tensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorId(pub usize);

/// One named parameter tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Reference state-dict key, e.g. `transformer.h.0.attn.in_proj.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
    pub init: Init,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.numel()
    }
}

/// How the reference initializes a tensor (shared/SPEC.md section 3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// N(0, 0.02): the embedding.
    Embedding,
    /// PyTorch's default Linear/Conv1d init, U(+-1/sqrt(fan_in)), times `scale`
    /// (1 / sqrt(2 n_layer) for projections into the residual stream, else 1).
    Uniform { fan_in: usize, scale: f32 },
    /// All ones: norms and Mamba's D.
    Ones,
    /// Mamba's dt_proj.weight: U(+-dt_rank^-0.5).
    DtProjWeight,
    /// Mamba's dt_proj.bias: softplus^-1(dt), dt log-uniform in [1e-3, 1e-1], floored at 1e-4.
    DtProjBias,
    /// Mamba's A_log[c, n] = ln(n + 1).
    ALog,
}

/// Mamba mixer parameters.
#[derive(Debug, Clone, Copy)]
pub struct MambaParams {
    pub in_proj: TensorId,   // [2E, d]
    pub conv_w: TensorId,    // [E, 1, d_conv]
    pub conv_b: TensorId,    // [E]
    pub x_proj: TensorId,    // [R + 2N, E]
    pub dt_proj_w: TensorId, // [E, R]
    pub dt_proj_b: TensorId, // [E]
    pub a_log: TensorId,     // [E, N]
    pub d_skip: TensorId,    // [E]
    pub out_proj: TensorId,  // [d, E]
}

/// Attention mixer parameters (window or full).
#[derive(Debug, Clone, Copy)]
pub struct AttentionParams {
    pub qkv: TensorId,  // [(H + 2G) * hd, d], grouped-interleaved rows
    pub proj: TensorId, // [d, H * hd]
}

/// SwiGLU MLP parameters: w3(silu(w1 x) * (w2 x)).
#[derive(Debug, Clone, Copy)]
pub struct MlpParams {
    pub hidden: usize,
    pub w1: TensorId, // [hidden, d], the gate
    pub w2: TensorId, // [hidden, d]
    pub w3: TensorId, // [d, hidden]
}

#[derive(Debug, Clone, Copy)]
pub enum MixerParams {
    Mamba(MambaParams),
    WindowAttention(AttentionParams),
    FullAttention(AttentionParams),
    Mlp(MlpParams),
}

/// One residual sublayer: its RMSNorm weight and its mixer.
#[derive(Debug, Clone, Copy)]
pub struct SublayerParams {
    pub norm: TensorId, // [d]
    pub mixer: MixerParams,
}

/// Every parameter tensor of a model, with typed handles for the model code.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    pub tensors: Vec<TensorSpec>,
    pub wte: TensorId, // [vocab, d]
    pub blocks: Vec<Vec<SublayerParams>>,
    pub ln_f: TensorId, // [d]
    /// `None` when the output projection is tied to `wte`.
    pub lm_head: Option<TensorId>, // [vocab, d]
    pub numel: usize,
}

/// Key prefixes of the norm and mixer of sublayer `position` of a block, as the reference
/// names them: `norm_1`/`attn` for the mixer, `norm_2`/`mlp` for the MLP; Mamba-SWA-MLP keeps its
/// Mamba under `norm_m`/`mb` and its attention under `norm_attn`/`attn`; the pure Mamba layout
/// uses mamba_ssm's block names `norm`/`mixer`.
fn sublayer_keys(layout: Layout, kind: Sublayer) -> (&'static str, &'static str) {
    match (layout, kind) {
        (_, Sublayer::Mlp) => ("norm_2", "mlp"),
        (Layout::Mamba, _) => ("norm", "mixer"),
        (Layout::MambaSwaMlp, Sublayer::Mamba) => ("norm_m", "mb"),
        (Layout::MambaSwaMlp, _) => ("norm_attn", "attn"),
        _ => ("norm_1", "attn"),
    }
}

struct Builder {
    tensors: Vec<TensorSpec>,
    numel: usize,
}

impl Builder {
    fn add(&mut self, name: String, shape: &[usize], init: Init) -> TensorId {
        let spec = TensorSpec {
            name,
            shape: shape.to_vec(),
            offset: self.numel,
            init,
        };
        self.numel += spec.numel();
        self.tensors.push(spec);
        TensorId(self.tensors.len() - 1)
    }

    fn mlp(&mut self, prefix: &str, d: usize, hidden: usize, out_scale: f32) -> MlpParams {
        let uniform = |fan_in| Init::Uniform { fan_in, scale: 1.0 };
        MlpParams {
            hidden,
            w1: self.add(
                format!("{prefix}.swiglu.w1.weight"),
                &[hidden, d],
                uniform(d),
            ),
            w2: self.add(
                format!("{prefix}.swiglu.w2.weight"),
                &[hidden, d],
                uniform(d),
            ),
            w3: self.add(
                format!("{prefix}.swiglu.w3.weight"),
                &[d, hidden],
                Init::Uniform {
                    fan_in: hidden,
                    scale: out_scale,
                },
            ),
        }
    }
}

impl ParamLayout {
    pub fn new(config: &Config) -> ParamLayout {
        let d = config.d_model;
        let e = config.d_inner();
        let n = config.d_state;
        let r = config.dt_rank;
        let out_scale = crate::config::residual_scale(config);
        let uniform = |fan_in| Init::Uniform { fan_in, scale: 1.0 };
        let mut b = Builder {
            tensors: Vec::new(),
            numel: 0,
        };

        let wte = b.add(
            "transformer.wte.weight".into(),
            &[config.vocab, d],
            Init::Embedding,
        );
        let mut blocks = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let kinds = config.layout.sublayers(i);
            let mut block = Vec::with_capacity(kinds.len());
            for &kind in kinds {
                let (norm_key, mixer_key) = sublayer_keys(config.layout, kind);
                let norm = b.add(
                    format!("transformer.h.{i}.{norm_key}.weight"),
                    &[d],
                    Init::Ones,
                );
                let p = format!("transformer.h.{i}.{mixer_key}");
                let mixer = match kind {
                    Sublayer::Mamba => MixerParams::Mamba(MambaParams {
                        in_proj: b.add(format!("{p}.in_proj.weight"), &[2 * e, d], uniform(d)),
                        conv_w: b.add(
                            format!("{p}.conv1d.weight"),
                            &[e, 1, config.d_conv],
                            uniform(config.d_conv),
                        ),
                        conv_b: b.add(format!("{p}.conv1d.bias"), &[e], uniform(config.d_conv)),
                        x_proj: b.add(format!("{p}.x_proj.weight"), &[r + 2 * n, e], uniform(e)),
                        dt_proj_w: b.add(
                            format!("{p}.dt_proj.weight"),
                            &[e, r],
                            Init::DtProjWeight,
                        ),
                        dt_proj_b: b.add(format!("{p}.dt_proj.bias"), &[e], Init::DtProjBias),
                        a_log: b.add(format!("{p}.A_log"), &[e, n], Init::ALog),
                        d_skip: b.add(format!("{p}.D"), &[e], Init::Ones),
                        out_proj: b.add(
                            format!("{p}.out_proj.weight"),
                            &[d, e],
                            Init::Uniform {
                                fan_in: e,
                                scale: out_scale,
                            },
                        ),
                    }),
                    Sublayer::WindowAttention | Sublayer::FullAttention => {
                        let h_hd = config.heads * config.head_dim;
                        let params = AttentionParams {
                            qkv: b.add(
                                format!("{p}.attn.weight"),
                                &[config.qkv_dim(), d],
                                uniform(d),
                            ),
                            proj: b.add(
                                format!("{p}.proj.weight"),
                                &[d, h_hd],
                                Init::Uniform {
                                    fan_in: h_hd,
                                    scale: out_scale,
                                },
                            ),
                        };
                        if kind == Sublayer::FullAttention {
                            MixerParams::FullAttention(params)
                        } else {
                            MixerParams::WindowAttention(params)
                        }
                    }
                    Sublayer::Mlp => MixerParams::Mlp(b.mlp(&p, d, config.mlp_hidden, out_scale)),
                    Sublayer::Mlp2 => MixerParams::Mlp(b.mlp(&p, d, 2 * d, out_scale)),
                };
                block.push(SublayerParams { norm, mixer });
            }
            blocks.push(block);
        }
        let ln_f = b.add("transformer.ln_f.weight".into(), &[d], Init::Ones);
        let lm_head = (!config.tied_embeddings)
            .then(|| b.add("lm_head.weight".into(), &[config.vocab, d], uniform(d)));
        ParamLayout {
            numel: b.numel,
            tensors: b.tensors,
            wte,
            blocks,
            ln_f,
            lm_head,
        }
    }

    pub fn spec(&self, id: TensorId) -> &TensorSpec {
        &self.tensors[id.0]
    }

    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .map(TensorId)
    }

    /// The elements of tensor `id` in a flat buffer laid out by `self`.
    pub fn slice<'a>(&self, buffer: &'a [f32], id: TensorId) -> &'a [f32] {
        &buffer[self.spec(id).range()]
    }

    pub fn slice_mut<'a>(&self, buffer: &'a mut [f32], id: TensorId) -> &'a mut [f32] {
        &mut buffer[self.spec(id).range()]
    }

    /// The output projection: `lm_head`, or `wte` when tied.
    pub fn output_embedding(&self) -> TensorId {
        self.lm_head.unwrap_or(self.wte)
    }
}
