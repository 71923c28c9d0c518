//! The recurrent state of a batch of sequences between chunks: what inference carries forward
//! instead of the whole past.
//!
//! Per sublayer and sequence:
//! - Mamba: the conv state (the last d_conv - 1 inputs of the conv, [d_conv - 1, E]) and the
//!   SSM state h [E, N], in f32;
//! - sliding-window attention: a ring of the last window - 1 keys and values;
//! - full attention (llama layout): every key and value, up to `max_context` positions;
//! - MLPs: nothing.
//!
//! Without full attention the state's size is fixed, whatever the context length.

use samba_model::layout::MixerParams;

use super::CpuModel;
use crate::error::CpuError;
use crate::ops::attention_cache::KvCache;

#[derive(Clone)]
pub(crate) enum LayerState {
    Stateless,
    Mamba {
        conv: Vec<f32>, // [batch, d_conv - 1, E]
        ssm: Vec<f32>,  // [batch, E, N]
    },
    Attention {
        caches: Vec<KvCache>, // one per sequence
    },
}

/// The state of `batch` sequences, each at its own position.
#[derive(Clone)]
pub struct DecodeState {
    pub(crate) positions: Vec<usize>,
    pub(crate) layers: Vec<LayerState>,
    /// Positions a full-attention layer may hold (ignored without full attention).
    pub max_context: usize,
}

impl DecodeState {
    /// The state of `batch` empty sequences (position 0).
    pub fn new(model: &CpuModel, batch: usize, max_context: usize) -> DecodeState {
        let c = &model.config;
        let e = c.d_inner();
        let kv_dim = c.kv_heads * c.head_dim;
        let layers = model
            .layout
            .blocks
            .iter()
            .flatten()
            .map(|s| match s.mixer {
                MixerParams::Mamba(_) => LayerState::Mamba {
                    conv: vec![0.0; batch * (c.d_conv - 1) * e],
                    ssm: vec![0.0; batch * e * c.d_state],
                },
                MixerParams::WindowAttention(_) => LayerState::Attention {
                    caches: vec![KvCache::new(kv_dim, c.window - 1); batch],
                },
                MixerParams::FullAttention(_) => LayerState::Attention {
                    caches: vec![KvCache::new(kv_dim, max_context); batch],
                },
                MixerParams::Mlp(_) => LayerState::Stateless,
            })
            .collect();
        DecodeState {
            positions: vec![0; batch],
            layers,
            max_context,
        }
    }

    pub fn batch(&self) -> usize {
        self.positions.len()
    }

    /// Tokens each sequence has consumed.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Bytes of state held now.
    pub fn bytes(&self) -> usize {
        let f = std::mem::size_of::<f32>();
        self.layers
            .iter()
            .map(|l| match l {
                LayerState::Stateless => 0,
                LayerState::Mamba { conv, ssm } => (conv.len() + ssm.len()) * f,
                LayerState::Attention { caches } => caches.iter().map(KvCache::bytes).sum(),
            })
            .sum()
    }

    /// Every number of the state in a fixed order (conv and SSM states, cached keys and values
    /// oldest first): for comparing two states.
    pub fn flatten(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for layer in &self.layers {
            match layer {
                LayerState::Stateless => {}
                LayerState::Mamba { conv, ssm } => {
                    out.extend_from_slice(conv);
                    out.extend_from_slice(ssm);
                }
                LayerState::Attention { caches } => {
                    caches.iter().for_each(|c| c.extend_into(&mut out))
                }
            }
        }
        out
    }

    /// Checks that every sequence can take `tokens` more positions.
    pub(crate) fn check_room(&self, tokens: usize) -> Result<(), CpuError> {
        let has_full_cache = self.layers.iter().any(|l| match l {
            LayerState::Attention { caches } => {
                caches.iter().any(|c| c.capacity() == self.max_context)
            }
            _ => false,
        });
        if !has_full_cache {
            return Ok(());
        }
        match self
            .positions
            .iter()
            .find(|&&p| p + tokens > self.max_context)
        {
            Some(&position) => Err(CpuError::ContextFull {
                position,
                tokens,
                max_context: self.max_context,
            }),
            None => Ok(()),
        }
    }

    /// The states of several sequences side by side, in order (for batched decoding of
    /// sequences prefilled one by one).
    pub fn stack(states: Vec<DecodeState>) -> DecodeState {
        let mut iter = states.into_iter();
        let mut out = iter.next().expect("at least one state");
        for s in iter {
            out.positions.extend(s.positions);
            for (mine, theirs) in out.layers.iter_mut().zip(s.layers) {
                match (mine, theirs) {
                    (LayerState::Stateless, LayerState::Stateless) => {}
                    (LayerState::Mamba { conv, ssm }, LayerState::Mamba { conv: c2, ssm: s2 }) => {
                        conv.extend(c2);
                        ssm.extend(s2);
                    }
                    (LayerState::Attention { caches }, LayerState::Attention { caches: c2 }) => {
                        caches.extend(c2)
                    }
                    _ => panic!("DecodeState::stack: states of different models"),
                }
            }
        }
        out
    }

    /// Keeps only the sequences at `rows` (in that order): drops finished sequences.
    pub fn select(&mut self, rows: &[usize]) {
        let batch = self.batch();
        let keep = |v: &mut Vec<f32>| {
            let per = v.len() / batch;
            let kept: Vec<f32> = rows
                .iter()
                .flat_map(|&r| v[r * per..(r + 1) * per].to_vec())
                .collect();
            *v = kept;
        };
        for layer in &mut self.layers {
            match layer {
                LayerState::Stateless => {}
                LayerState::Mamba { conv, ssm } => {
                    keep(conv);
                    keep(ssm);
                }
                LayerState::Attention { caches } => {
                    *caches = rows.iter().map(|&r| caches[r].clone()).collect();
                }
            }
        }
        self.positions = rows.iter().map(|&r| self.positions[r]).collect();
    }
}
