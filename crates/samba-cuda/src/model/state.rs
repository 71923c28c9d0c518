//! The recurrent state of a batch of sequences on the device, with the semantics of the CPU's
//! `samba_cpu::DecodeState`. Per sublayer, with the batch as the outer dimension (so sequence
//! slot b is one contiguous range of every buffer):
//! - Mamba: the conv state [batch, d_conv - 1, E] (the last inputs of the conv, in T) and the
//!   SSM state h [batch, E, N] in f32;
//! - sliding-window attention: rings of keys and values [batch, window - 1, kv_heads * hd] (T),
//!   position p at slot p % (window - 1);
//! - full attention (llama layout): the same with `max_context` slots;
//! - MLPs: nothing.
//!
//! The positions live on the device too (`pos` [batch], i32), read by RoPE and attention and
//! advanced by the forward itself, so a captured decoding step needs no input from the host but
//! its tokens; the host keeps a copy (`positions`) for checks.

use std::sync::atomic::{AtomicU64, Ordering};

use samba_cpu::ops::rope::RopeTable;
use samba_model::layout::MixerParams;
use samba_model::Config;

use super::CudaModel;
use crate::error::{CudaError, Result};
use crate::ops::attention::decode_splits;
use crate::ops::rope::DeviceRopeTable;
use crate::{Buffer, CudaDevice, Elem};

/// Positions the RoPE table covers at first; it doubles as sequences grow.
const ROPE_START: usize = 4096;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) enum LayerState<T> {
    Stateless,
    Mamba {
        /// [batch, d_conv - 1, E]
        conv: Buffer<T>,
        /// [batch, E, N] f32
        ssm: Buffer<f32>,
    },
    Attention {
        /// [batch, cap, kv_heads * head_dim] each
        k: Buffer<T>,
        v: Buffer<T>,
        cap: usize,
        /// Full attention (cap = max_context): the context is bounded by the ring.
        full: bool,
    },
}

/// What a sublayer's forward sees of the state: its own buffers, and the positions.
pub(crate) struct LayerRef<'a, T> {
    pub layer: &'a mut LayerState<T>,
    /// [batch] i32: each sequence's position before the chunk.
    pub pos: &'a Buffer<i32>,
    /// RoPE for positions 0..len, covering the chunk (None for NoPE).
    pub rope: Option<&'a DeviceRopeTable>,
    /// The largest position of any sequence before the chunk (host copy).
    pub max_position: usize,
    /// [batch, heads, n_split, head_dim + 2] f32: the decoding attention's split partial results.
    pub part: &'a mut Buffer<f32>,
    pub n_split: usize,
}

/// The state of `batch` sequences on the device, each at its own position.
pub struct CudaDecodeState<T> {
    /// Identifies the state's buffers to a captured decoding graph.
    pub(crate) id: u64,
    positions: Vec<usize>,
    pos: Buffer<i32>,
    pub(crate) layers: Vec<LayerState<T>>,
    /// Positions a full-attention layer may hold (ignored without full attention).
    pub max_context: usize,
    rope: Option<DeviceRopeTable>,
    /// Changes whenever the RoPE table is replaced (a captured graph holds its address).
    pub(crate) rope_generation: u64,
    /// Scratch of the decoding attention (see `LayerRef::part`).
    part: Buffer<f32>,
    n_split: usize,
}

impl<T: Elem> CudaDecodeState<T> {
    /// The state of `batch` empty sequences (position 0) of `model`.
    pub fn new(
        model: &CudaModel<T>,
        batch: usize,
        max_context: usize,
    ) -> Result<CudaDecodeState<T>> {
        let c = &model.config;
        let dev = &**model.device();
        let e = c.d_inner();
        let kv_dim = c.kv_heads * c.head_dim;
        let layers = model
            .layout
            .blocks
            .iter()
            .flatten()
            .map(|s| -> Result<LayerState<T>> {
                Ok(match s.mixer {
                    MixerParams::Mamba(_) => LayerState::Mamba {
                        conv: dev.zeros::<T>((batch * (c.d_conv - 1) * e).max(1))?,
                        ssm: dev.zeros::<f32>((batch * e * c.d_state).max(1))?,
                    },
                    MixerParams::WindowAttention(_) => {
                        ring(dev, batch, c.window - 1, kv_dim, false)?
                    }
                    MixerParams::FullAttention(_) => ring(dev, batch, max_context, kv_dim, true)?,
                    MixerParams::Mlp(_) => LayerState::Stateless,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let max_keys = layers
            .iter()
            .map(|l| match l {
                LayerState::Attention { cap, .. } => *cap,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let n_split = decode_splits(batch, c.heads, max_keys);
        let part_len = if max_keys > 0
            || layers
                .iter()
                .any(|l| matches!(l, LayerState::Attention { .. }))
        {
            batch * c.heads * n_split * (c.head_dim + 2)
        } else {
            0
        };
        Ok(CudaDecodeState {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            positions: vec![0; batch],
            pos: dev.zeros::<i32>(batch.max(1))?,
            layers,
            max_context,
            rope: None,
            rope_generation: 0,
            part: dev.zeros::<f32>(part_len.max(1))?,
            n_split,
        })
    }

    /// Device bytes a state of `batch` sequences of `config` holds (to check it fits first).
    pub fn bytes_for(config: &Config, batch: usize, max_context: usize) -> usize {
        let layout = samba_model::ParamLayout::new(config);
        let t = std::mem::size_of::<T>();
        let e = config.d_inner();
        let kv_dim = config.kv_heads * config.head_dim;
        layout
            .blocks
            .iter()
            .flatten()
            .map(|s| match s.mixer {
                MixerParams::Mamba(_) => {
                    batch * (config.d_conv - 1) * e * t + batch * e * config.d_state * 4
                }
                MixerParams::WindowAttention(_) => 2 * batch * (config.window - 1) * kv_dim * t,
                MixerParams::FullAttention(_) => 2 * batch * max_context * kv_dim * t,
                MixerParams::Mlp(_) => 0,
            })
            .sum::<usize>()
            + batch
                * config.heads
                * decode_splits(batch, config.heads, max_context.max(config.window))
                * (config.head_dim + 2)
                * 4
    }

    pub fn batch(&self) -> usize {
        self.positions.len()
    }

    /// Tokens each sequence has consumed.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Device bytes the state holds (allocated: the rings at full size).
    pub fn bytes(&self) -> usize {
        let t = std::mem::size_of::<T>();
        self.layers
            .iter()
            .map(|l| match l {
                LayerState::Stateless => 0,
                LayerState::Mamba { conv, ssm } => conv.len() * t + ssm.len() * 4,
                LayerState::Attention { k, v, .. } => (k.len() + v.len()) * t,
            })
            .sum()
    }

    /// Bytes a decoding step reads from the state now: conv and SSM states, and the keys and
    /// values each sequence's window (or full context) holds at its position.
    pub fn bytes_read_per_step(&self, config: &Config) -> usize {
        let t = std::mem::size_of::<T>();
        let kv_dim = config.kv_heads * config.head_dim;
        self.layers
            .iter()
            .map(|l| match l {
                LayerState::Stateless => 0,
                LayerState::Mamba { conv, ssm } => conv.len() * t + ssm.len() * 4,
                LayerState::Attention { cap, .. } => self
                    .positions
                    .iter()
                    .map(|&p| 2 * p.min(*cap) * kv_dim * t)
                    .sum(),
            })
            .sum()
    }

    /// Checks that every sequence can take `tokens` more positions.
    pub(crate) fn check_room(&self, tokens: usize) -> Result<()> {
        let has_full = self
            .layers
            .iter()
            .any(|l| matches!(l, LayerState::Attention { full: true, .. }));
        let limit = if has_full {
            self.max_context
        } else {
            i32::MAX as usize
        };
        match self.positions.iter().find(|&&p| p + tokens > limit) {
            Some(&position) => Err(samba_cpu::CpuError::ContextFull {
                position,
                tokens,
                max_context: limit,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Makes the RoPE table cover every position the next `tokens` tokens reach.
    pub(crate) fn ensure_rope(
        &mut self,
        dev: &CudaDevice,
        config: &Config,
        tokens: usize,
    ) -> Result<()> {
        let Some(base) = config.rope_base else {
            return Ok(());
        };
        let need = self.positions.iter().max().copied().unwrap_or(0) + tokens;
        if self.rope.as_ref().is_some_and(|t| t.len >= need) {
            return Ok(());
        }
        let old = self.rope.as_ref().map_or(0, |t| t.len);
        let len = need.max(2 * old).max(ROPE_START);
        self.rope = Some(DeviceRopeTable::upload(
            dev,
            &RopeTable::new(base, config.head_dim, 0, len),
        )?);
        self.rope_generation += 1;
        Ok(())
    }

    /// The buffers of sublayer k, with the positions.
    pub(crate) fn layer(&mut self, k: usize) -> LayerRef<'_, T> {
        LayerRef {
            layer: &mut self.layers[k],
            pos: &self.pos,
            rope: self.rope.as_ref(),
            max_position: self.positions.iter().max().copied().unwrap_or(0),
            part: &mut self.part,
            n_split: self.n_split,
        }
    }

    pub(crate) fn positions_buffer(&mut self) -> &mut Buffer<i32> {
        &mut self.pos
    }

    /// The host copy follows the device's positions_advance.
    pub(crate) fn advance_host(&mut self, tokens: usize) {
        self.positions.iter_mut().for_each(|p| *p += tokens);
    }

    /// Back to `batch` empty sequences at position 0 (every state zeroed), keeping the buffers
    /// (and with them a captured decoding graph).
    pub fn reset(&mut self, dev: &CudaDevice) -> Result<()> {
        let zero = |what: &str| crate::error::driver(format!("zeroing the {what}"));
        for layer in &mut self.layers {
            match layer {
                LayerState::Stateless => {}
                LayerState::Mamba { conv, ssm } => {
                    dev.stream()
                        .memset_zeros(conv)
                        .map_err(zero("conv state"))?;
                    dev.stream().memset_zeros(ssm).map_err(zero("SSM state"))?;
                }
                LayerState::Attention { k, v, .. } => {
                    dev.stream().memset_zeros(k).map_err(zero("key ring"))?;
                    dev.stream().memset_zeros(v).map_err(zero("value ring"))?;
                }
            }
        }
        dev.stream()
            .memset_zeros(&mut self.pos)
            .map_err(zero("positions"))?;
        self.positions.iter_mut().for_each(|p| *p = 0);
        Ok(())
    }

    /// A state of `times` copies of this one's single sequence (batched decoding of one
    /// prefilled context). Copies on the device.
    pub fn repeat(&self, model: &CudaModel<T>, times: usize) -> Result<CudaDecodeState<T>> {
        if self.batch() != 1 {
            return Err(samba_cpu::CpuError::BatchMismatch {
                state: self.batch(),
                batch: 1,
            }
            .into());
        }
        let dev = &**model.device();
        let mut out = CudaDecodeState::new(model, times, self.max_context)?;
        let copy = |src: &Buffer<T>, dst: &mut Buffer<T>| -> Result<()> {
            let per = src.len();
            for b in 0..times {
                let mut view = dst.slice_mut(b * per..(b + 1) * per);
                dev.stream()
                    .memcpy_dtod(src, &mut view)
                    .map_err(crate::error::driver("copying a decode state"))?;
            }
            Ok(())
        };
        for (mine, theirs) in self.layers.iter().zip(out.layers.iter_mut()) {
            match (mine, theirs) {
                (LayerState::Mamba { conv, ssm }, LayerState::Mamba { conv: c2, ssm: s2 }) => {
                    copy(conv, c2)?;
                    let per = ssm.len();
                    for b in 0..times {
                        let mut view = s2.slice_mut(b * per..(b + 1) * per);
                        dev.stream()
                            .memcpy_dtod(ssm, &mut view)
                            .map_err(crate::error::driver("copying a decode state"))?;
                    }
                }
                (
                    LayerState::Attention { k, v, .. },
                    LayerState::Attention { k: k2, v: v2, .. },
                ) => {
                    copy(k, k2)?;
                    copy(v, v2)?;
                }
                _ => {}
            }
        }
        out.positions = vec![self.positions[0]; times];
        let pos = vec![self.positions[0] as i32; times];
        dev.stream()
            .memcpy_htod(&pos, &mut out.pos)
            .map_err(crate::error::driver("copying positions"))?;
        Ok(out)
    }

    /// A copy of this state on the device (the same sequences at the same positions), with its
    /// own buffers and a new identity: a decoding graph captured with one never replays on the
    /// other.
    pub fn try_clone(&self, model: &CudaModel<T>) -> Result<CudaDecodeState<T>> {
        let mut out = CudaDecodeState::new(model, self.batch(), self.max_context)?;
        let all = Run {
            src: 0,
            dst: 0,
            len: self.batch(),
        };
        copy_sequences(model, self, &mut out, &[all], "CudaDecodeState::try_clone")?;
        out.set_positions(model.device(), self.positions.clone())?;
        Ok(out)
    }

    /// Keeps only the sequences at `rows` (in that order, repeats allowed), as the CPU's
    /// `DecodeState::select`: drops finished sequences from a batch. The kept sequences are
    /// copied into buffers of the new batch size (so the state gets a new identity, and the
    /// next decoding step a new graph); runs of consecutive rows move in one copy.
    pub fn select(&mut self, model: &CudaModel<T>, rows: &[usize]) -> Result<()> {
        let batch = self.batch();
        if let Some(&bad) = rows.iter().find(|&&r| r >= batch) {
            return Err(CudaError::Unsupported {
                op: "CudaDecodeState::select",
                reason: format!("row {bad} is outside the batch of {batch} sequences"),
            });
        }
        let mut runs: Vec<Run> = Vec::new();
        for (dst, &src) in rows.iter().enumerate() {
            match runs.last_mut() {
                Some(r) if r.src + r.len == src => r.len += 1,
                _ => runs.push(Run { src, dst, len: 1 }),
            }
        }
        let mut out = CudaDecodeState::new(model, rows.len(), self.max_context)?;
        copy_sequences(model, self, &mut out, &runs, "CudaDecodeState::select")?;
        out.set_positions(
            model.device(),
            rows.iter().map(|&r| self.positions[r]).collect(),
        )?;
        *self = out;
        Ok(())
    }

    /// The sequences of several states side by side, in order, as the CPU's
    /// `DecodeState::stack` (batched decoding of sequences prefilled one by one). The states
    /// must be of `model`, with the same `max_context` where the model has full attention.
    pub fn stack(
        model: &CudaModel<T>,
        states: &[CudaDecodeState<T>],
    ) -> Result<CudaDecodeState<T>> {
        const OP: &str = "CudaDecodeState::stack";
        let Some(first) = states.first() else {
            return Err(CudaError::Unsupported {
                op: OP,
                reason: "no states to stack".into(),
            });
        };
        let batch = states.iter().map(CudaDecodeState::batch).sum();
        let mut out = CudaDecodeState::new(model, batch, first.max_context)?;
        let mut dst = 0;
        for s in states {
            let run = Run {
                src: 0,
                dst,
                len: s.batch(),
            };
            copy_sequences(model, s, &mut out, &[run], OP)?;
            dst += s.batch();
        }
        let positions = states.iter().flat_map(|s| s.positions.clone()).collect();
        out.set_positions(model.device(), positions)?;
        Ok(out)
    }

    /// Sets every sequence's position, on the host and on the device.
    fn set_positions(&mut self, dev: &CudaDevice, positions: Vec<usize>) -> Result<()> {
        let pos: Vec<i32> = positions
            .iter()
            .map(|&p| i32::try_from(p))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| CudaError::Unsupported {
                op: "CudaDecodeState",
                reason: "a position does not fit the kernels' 32-bit index".into(),
            })?;
        if !pos.is_empty() {
            dev.stream()
                .memcpy_htod(&pos, &mut self.pos)
                .map_err(crate::error::driver("copying positions"))?;
        }
        self.positions = positions;
        Ok(())
    }

    /// Every number of the state in the CPU's `DecodeState::flatten` order (per sublayer: conv
    /// then SSM states; per sequence its cached keys, then values, oldest first), as f32;
    /// waits for the GPU. For comparing states.
    pub fn flatten(&self, dev: &CudaDevice, config: &Config) -> Result<Vec<f32>> {
        let kv_dim = config.kv_heads * config.head_dim;
        let mut out = Vec::new();
        let batch = self.batch();
        for layer in &self.layers {
            match layer {
                LayerState::Stateless => {}
                LayerState::Mamba { conv, ssm } => {
                    let n = batch * (config.d_conv - 1) * config.d_inner();
                    out.extend(dev.download(conv)?.into_iter().take(n).map(|v| v.to_f32()));
                    let n = batch * config.d_inner() * config.d_state;
                    out.extend(dev.download(ssm)?.into_iter().take(n));
                }
                LayerState::Attention { k, v, cap, .. } => {
                    let (k, v) = (dev.download(k)?, dev.download(v)?);
                    for (b, &p) in self.positions.iter().enumerate() {
                        let len = p.min(*cap);
                        for ring in [&k, &v] {
                            for j in p - len..p {
                                let at = (b * cap + j % cap) * kv_dim;
                                out.extend(ring[at..at + kv_dim].iter().map(|x| x.to_f32()));
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn ring<T: Elem>(
    dev: &CudaDevice,
    batch: usize,
    cap: usize,
    kv_dim: usize,
    full: bool,
) -> Result<LayerState<T>> {
    let n = (batch * cap * kv_dim).max(1);
    Ok(LayerState::Attention {
        k: dev.zeros::<T>(n)?,
        v: dev.zeros::<T>(n)?,
        cap,
        full,
    })
}

/// `len` sequences from slot `src` of one state to slot `dst` of another.
#[derive(Debug, Clone, Copy)]
struct Run {
    src: usize,
    dst: usize,
    len: usize,
}

/// Copies the runs of sequences of every layer's buffers from `src` to `dst` (device to device;
/// the positions are the caller's). Both states must be of `model`: the same sublayers, and
/// rings of the same capacity.
fn copy_sequences<T: Elem>(
    model: &CudaModel<T>,
    src: &CudaDecodeState<T>,
    dst: &mut CudaDecodeState<T>,
    runs: &[Run],
    op: &'static str,
) -> Result<()> {
    let c = &model.config;
    let dev = &**model.device();
    let e = c.d_inner();
    let kv_dim = c.kv_heads * c.head_dim;
    let mismatch = |reason: String| CudaError::Unsupported { op, reason };
    if src.layers.len() != dst.layers.len() {
        return Err(mismatch(format!(
            "a state of {} sublayers and one of {}: states of different models",
            src.layers.len(),
            dst.layers.len()
        )));
    }
    for (k, (from, to)) in src.layers.iter().zip(dst.layers.iter_mut()).enumerate() {
        match (from, to) {
            (LayerState::Stateless, LayerState::Stateless) => {}
            (LayerState::Mamba { conv, ssm }, LayerState::Mamba { conv: c2, ssm: s2 }) => {
                // conv [batch, d_conv - 1, E], ssm [batch, E, N]: one range per sequence.
                copy_runs(dev, conv, c2, (c.d_conv - 1) * e, runs)?;
                copy_runs(dev, ssm, s2, e * c.d_state, runs)?;
            }
            (
                LayerState::Attention {
                    k: k1, v: v1, cap, ..
                },
                LayerState::Attention {
                    k: k2,
                    v: v2,
                    cap: cap2,
                    ..
                },
            ) => {
                if cap != cap2 {
                    return Err(mismatch(format!(
                        "sublayer {k} holds {cap} positions in one state and {cap2} in the other (states made with different max_context)"
                    )));
                }
                // Rings [batch, cap, kv_dim]: a sequence's slots are one range, and keep their
                // order (position p at slot p % cap) since the positions move with them.
                copy_runs(dev, k1, k2, cap * kv_dim, runs)?;
                copy_runs(dev, v1, v2, cap * kv_dim, runs)?;
            }
            _ => {
                return Err(mismatch(format!(
                    "sublayer {k} differs between the states: states of different models"
                )))
            }
        }
    }
    Ok(())
}

/// Copies `per` elements per sequence for every run, one device-to-device copy per run.
fn copy_runs<E: cudarc::driver::DeviceRepr>(
    dev: &CudaDevice,
    src: &Buffer<E>,
    dst: &mut Buffer<E>,
    per: usize,
    runs: &[Run],
) -> Result<()> {
    for r in runs.iter().filter(|r| r.len > 0 && per > 0) {
        let from = src.slice(r.src * per..(r.src + r.len) * per);
        let mut to = dst.slice_mut(r.dst * per..(r.dst + r.len) * per);
        dev.stream()
            .memcpy_dtod(&from, &mut to)
            .map_err(crate::error::driver("copying a decode state"))?;
    }
    Ok(())
}
