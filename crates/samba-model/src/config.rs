//! The model configuration: plain data, read from and written to `config.json`.
//!
//! Every shape in the model derives from these fields; the same names are used for the CLI flags
//! (`--d-model`, `--kv-heads`, ...) and in the docs.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Which mixers a block holds. See shared/SPEC.md section 1 and docs/architecture.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Block i: Mamba (even i) or sliding-window attention (odd i), then a SwiGLU MLP.
    Samba,
    /// Every block: Mamba, sliding-window attention, SwiGLU MLP.
    MambaSwaMlp,
    /// Every block: Mamba, SwiGLU MLP.
    MambaMlp,
    /// Every block: Mamba only.
    Mamba,
    /// Every block: full causal attention, SwiGLU MLP (Llama-2; untied embeddings in the paper).
    Llama,
    /// Every block: sliding-window attention, SwiGLU MLP (Mistral-style).
    LlamaSwa,
    /// Samba with Mamba replaced by a SwiGLU MLP of hidden 2 * d_model.
    Mlp2SwaMlp,
}

impl Layout {
    pub const ALL: [Layout; 7] = [
        Layout::Samba,
        Layout::MambaSwaMlp,
        Layout::MambaMlp,
        Layout::Mamba,
        Layout::Llama,
        Layout::LlamaSwa,
        Layout::Mlp2SwaMlp,
    ];

    /// The name used in config.json and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Samba => "samba",
            Layout::MambaSwaMlp => "mamba-swa-mlp",
            Layout::MambaMlp => "mamba-mlp",
            Layout::Mamba => "mamba",
            Layout::Llama => "llama",
            Layout::LlamaSwa => "llama-swa",
            Layout::Mlp2SwaMlp => "mlp2-swa-mlp",
        }
    }

    pub fn from_name(name: &str) -> Result<Layout, ModelError> {
        Layout::ALL
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| ModelError::UnknownLayout(name.to_string()))
    }

    /// The sublayers of block `i`, in the order they are applied.
    pub fn sublayers(self, i: usize) -> &'static [Sublayer] {
        use Sublayer::*;
        match self {
            Layout::Samba if i % 2 == 0 => &[Mamba, Mlp],
            Layout::Samba => &[WindowAttention, Mlp],
            Layout::MambaSwaMlp => &[Mamba, WindowAttention, Mlp],
            Layout::MambaMlp => &[Mamba, Mlp],
            Layout::Mamba => &[Mamba],
            Layout::Llama => &[FullAttention, Mlp],
            Layout::LlamaSwa => &[WindowAttention, Mlp],
            Layout::Mlp2SwaMlp if i % 2 == 0 => &[Mlp2, Mlp],
            Layout::Mlp2SwaMlp => &[WindowAttention, Mlp],
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One pre-norm residual sublayer: `x = x + f(RMSNorm(x))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sublayer {
    /// Mamba-1 selective state space mixer.
    Mamba,
    /// Causal attention restricted to the last `window` positions (current one included).
    WindowAttention,
    /// Causal attention over the whole prefix.
    FullAttention,
    /// SwiGLU MLP of hidden `mlp_hidden`.
    Mlp,
    /// SwiGLU MLP of hidden `2 * d_model`, standing where Mamba stands in Samba.
    Mlp2,
}

/// The shape and numerics of one model. `config.json` of a model folder is this, serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub layout: Layout,
    /// Number of blocks (the paper counts 2 * n_layer "layers" for Samba).
    pub n_layer: usize,
    pub d_model: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (groups); `heads` must be a multiple. Equal to `heads` for MHA, 1 for MQA.
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Hidden width of the SwiGLU MLP.
    pub mlp_hidden: usize,
    /// Sliding-window length in tokens, counting the current token.
    pub window: usize,
    /// RoPE base; `null` for no positional encoding (NoPE). The key is required: a config that
    /// forgets it must not silently become a NoPE model.
    #[serde(deserialize_with = "Option::deserialize")]
    pub rope_base: Option<f32>,
    pub d_state: usize,
    pub d_conv: usize,
    pub expand: usize,
    pub dt_rank: usize,
    pub vocab: usize,
    pub tied_embeddings: bool,
    pub norm_eps: f32,
}

impl Config {
    /// Inner width of Mamba, E = expand * d_model.
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    /// Rows of the fused attention projection, (heads + 2 * kv_heads) * head_dim.
    pub fn qkv_dim(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Rows of Mamba's x_proj: dt_rank + 2 * d_state.
    pub fn x_proj_dim(&self) -> usize {
        self.dt_rank + 2 * self.d_state
    }

    /// Whether any block holds a Mamba mixer.
    pub fn has_mamba(&self) -> bool {
        (0..self.n_layer).any(|i| self.layout.sublayers(i).contains(&Sublayer::Mamba))
    }

    /// Whether any block attends over the whole prefix (memory grows with context).
    pub fn has_full_attention(&self) -> bool {
        (0..self.n_layer).any(|i| self.layout.sublayers(i).contains(&Sublayer::FullAttention))
    }

    /// Checks that the fields describe a buildable model.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &'static str, why: String| Err(ModelError::InvalidConfig { field, why });
        let positive = [
            ("n_layer", self.n_layer),
            ("d_model", self.d_model),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("mlp_hidden", self.mlp_hidden),
            ("window", self.window),
            ("d_state", self.d_state),
            ("d_conv", self.d_conv),
            ("expand", self.expand),
            ("dt_rank", self.dt_rank),
            ("vocab", self.vocab),
        ];
        for (field, value) in positive {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.heads % self.kv_heads != 0 {
            return bad(
                "kv_heads",
                format!(
                    "heads ({}) must be a multiple of kv_heads ({})",
                    self.heads, self.kv_heads
                ),
            );
        }
        if self.head_dim % 2 != 0 && self.rope_base.is_some() {
            return bad(
                "head_dim",
                format!("RoPE needs an even head_dim, got {}", self.head_dim),
            );
        }
        if let Some(base) = self.rope_base {
            if !(base.is_finite() && base > 1.0) {
                return bad(
                    "rope_base",
                    format!("must be a finite number above 1, got {base}"),
                );
            }
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return bad(
                "norm_eps",
                format!("must be a positive number, got {}", self.norm_eps),
            );
        }
        if self.vocab > u32::MAX as usize {
            return bad(
                "vocab",
                format!("{} does not fit token ids of 32 bits", self.vocab),
            );
        }
        if self.param_count_bound().is_none() {
            return bad(
                "d_model",
                format!(
                    "and the other sizes (n_layer {}, d_model {}, heads {}, kv_heads {}, \
                     head_dim {}, mlp_hidden {}, expand {}, d_state {}, dt_rank {}, vocab {}) \
                     give more parameters than a buffer can index",
                    self.n_layer,
                    self.d_model,
                    self.heads,
                    self.kv_heads,
                    self.head_dim,
                    self.mlp_hidden,
                    self.expand,
                    self.d_state,
                    self.dt_rank,
                    self.vocab
                ),
            );
        }
        Ok(())
    }

    /// An upper bound on the parameter count, `None` when it overflows or exceeds what one f32
    /// buffer can index (isize::MAX bytes). Every shape product of the layout is at most this, so
    /// a config that passes cannot overflow while its layout is built.
    fn param_count_bound(&self) -> Option<usize> {
        let mul = |a: usize, b: usize| a.checked_mul(b);
        let add = |a: usize, b: usize| a.checked_add(b);
        let d = self.d_model;
        let e = mul(self.expand, d)?;
        // Mamba: in_proj [2E, d], conv1d [E, 1, d_conv] + [E], x_proj [R + 2N, E],
        // dt_proj [E, R] + [E], A_log [E, N], D [E], out_proj [d, E].
        let x_proj_rows = add(self.dt_rank, mul(2, self.d_state)?)?;
        let mamba = [
            mul(mul(2, e)?, d)?,
            mul(e, add(self.d_conv, 1)?)?,
            mul(x_proj_rows, e)?,
            mul(e, add(self.dt_rank, 1)?)?,
            mul(e, add(self.d_state, 1)?)?,
            mul(d, e)?,
        ]
        .into_iter()
        .try_fold(0usize, add)?;
        // Attention: attn [(H + 2G) * hd, d], proj [d, H * hd].
        let qkv_rows = mul(add(self.heads, mul(2, self.kv_heads)?)?, self.head_dim)?;
        let attention = add(mul(qkv_rows, d)?, mul(d, mul(self.heads, self.head_dim)?)?)?;
        // SwiGLU of hidden mlp_hidden or 2d: three [hidden, d] matrices.
        let mlp = mul(3, mul(self.mlp_hidden.max(mul(2, d)?), d)?)?;
        let sublayer = add(mamba.max(attention).max(mlp), d)?;
        // At most three sublayers per block; wte, lm_head and ln_f.
        let blocks = mul(mul(3, self.n_layer)?, sublayer)?;
        let total = add(add(blocks, mul(mul(2, self.vocab)?, d)?)?, d)?;
        (total <= isize::MAX as usize / std::mem::size_of::<f32>()).then_some(total)
    }

    /// Parses and validates config.json text; `source` names the file in errors, invalid values
    /// included (they come back as [`ModelError::ConfigJson`] naming the file and the field).
    pub fn from_json(text: &str, source: &str) -> Result<Config, ModelError> {
        let in_file = |why: String| ModelError::ConfigJson {
            path: source.to_string(),
            why,
        };
        let config: Config = serde_json::from_str(text).map_err(|e| in_file(e.to_string()))?;
        config.validate().map_err(|e| match e {
            ModelError::InvalidConfig { field, why } => in_file(format!("{field} {why}")),
            other => other,
        })?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        // A Config always serializes: it holds only numbers, booleans and enum names.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Parameters whose output feeds the residual stream (Mamba out_proj, attention proj, MLP w3)
/// are initialized divided by sqrt(n_res * n_layer), n_res being the residual sublayers per
/// block: 2 in general, 3 for Mamba-SWA-MLP, 1 for the pure Mamba layout.
pub fn residual_scale(config: &Config) -> f32 {
    let n_res = config.layout.sublayers(0).len();
    1.0 / ((n_res * config.n_layer) as f32).sqrt()
}
