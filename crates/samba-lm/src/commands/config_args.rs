//! Model shapes from the command line: a preset, a layout, and any field overridden by a flag
//! named like the config field (`--d-model` for `d_model`).

use anyhow::{bail, Context, Result};
use clap::Args;
use samba_model::preset::{default_dt_rank, preset_with_layout, PRESETS};
use samba_model::{Config, Layout};

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Model size to start from: tiny, small, samba-421m, samba-1.3b, samba-1.7b, samba-3.8b.
    #[arg(long, value_name = "NAME")]
    pub preset: String,
    /// Block layout: samba, mamba-swa-mlp, mamba-mlp, mamba, llama, llama-swa, mlp2-swa-mlp.
    #[arg(long, value_name = "LAYOUT")]
    pub layout: Option<String>,
    #[arg(long)]
    pub n_layer: Option<usize>,
    #[arg(long)]
    pub d_model: Option<usize>,
    /// Query heads (head_dim becomes d_model / heads unless --head-dim is given).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Key/value heads: equal to --heads for MHA, fewer for GQA, 1 for MQA.
    #[arg(long)]
    pub kv_heads: Option<usize>,
    #[arg(long)]
    pub head_dim: Option<usize>,
    #[arg(long)]
    pub mlp_hidden: Option<usize>,
    /// Sliding-window length in tokens, counting the current token.
    #[arg(long)]
    pub window: Option<usize>,
    #[arg(long, conflicts_with = "no_rope")]
    pub rope_base: Option<f32>,
    /// No positional encoding (NoPE).
    #[arg(long)]
    pub no_rope: bool,
    #[arg(long)]
    pub d_state: Option<usize>,
    #[arg(long)]
    pub d_conv: Option<usize>,
    #[arg(long)]
    pub expand: Option<usize>,
    /// Rank of Mamba's dt projection (default ceil(d_model / 16)).
    #[arg(long)]
    pub dt_rank: Option<usize>,
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Tie (true) or untie (false) the input embedding and the output projection.
    #[arg(long, value_name = "BOOL")]
    pub tied_embeddings: Option<bool>,
    #[arg(long)]
    pub norm_eps: Option<f32>,
}

impl ConfigArgs {
    /// The preset, with the layout and every given field applied; derived fields (head_dim,
    /// dt_rank) follow the fields they derive from unless given themselves.
    pub fn to_config(&self) -> Result<Config> {
        let layout = match &self.layout {
            Some(name) => Layout::from_name(name)?,
            None => Layout::Samba,
        };
        if !PRESETS.contains(&self.preset.as_str()) {
            bail!(
                "unknown preset '{}' (expected one of: {})",
                self.preset,
                PRESETS.join(", ")
            );
        }
        let mut c = preset_with_layout(&self.preset, layout)?;
        let set = |field: &mut usize, value: Option<usize>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut c.n_layer, self.n_layer);
        set(&mut c.d_model, self.d_model);
        set(&mut c.heads, self.heads);
        set(&mut c.kv_heads, self.kv_heads);
        set(&mut c.mlp_hidden, self.mlp_hidden);
        set(&mut c.window, self.window);
        set(&mut c.d_state, self.d_state);
        set(&mut c.d_conv, self.d_conv);
        set(&mut c.expand, self.expand);
        set(&mut c.vocab, self.vocab);
        if self.kv_heads.is_none() && self.heads.is_some() && c.heads % c.kv_heads != 0 {
            c.kv_heads = c.heads;
        }
        c.head_dim = match self.head_dim {
            Some(hd) => hd,
            None if self.d_model.is_some() || self.heads.is_some() => {
                if c.heads == 0 || c.d_model % c.heads != 0 {
                    bail!(
                        "--d-model {} is not a multiple of --heads {}; give --head-dim",
                        c.d_model,
                        c.heads
                    );
                }
                c.d_model / c.heads
            }
            None => c.head_dim,
        };
        c.dt_rank = match self.dt_rank {
            Some(r) => r,
            None if self.d_model.is_some() => default_dt_rank(c.d_model),
            None => c.dt_rank,
        };
        if self.no_rope {
            c.rope_base = None;
        } else if let Some(base) = self.rope_base {
            c.rope_base = Some(base);
        }
        if let Some(tied) = self.tied_embeddings {
            c.tied_embeddings = tied;
        }
        if let Some(eps) = self.norm_eps {
            c.norm_eps = eps;
        }
        c.validate().context("the flags describe no valid model")?;
        Ok(c)
    }
}
