//! The type the forward's activations are stored in: f32 (the default: training, gradcheck,
//! inference on the CPU), or bf16 emulated in f32, so that the CPU model is the reference of a
//! GPU forward that stores its activations in bf16 (`samba_cuda::CudaModel<bf16>`).
//!
//! With [`ActivationStorage::Bf16`] the arithmetic stays f32; each activation the GPU writes to
//! a bf16 buffer is rounded to bf16 (round to nearest, ties to even, as the kernels' `st` does)
//! right after the op that writes it, and what the GPU keeps in f32 or in registers is not.
//!
//! The rounding points, each with the GPU buffer (crates/samba-cuda/src/model/plan.rs and
//! state.rs) it matches; keep this list in step with the GPU forward:
//!
//! | CPU (model/*.rs)                | GPU buffer (T = bf16)              | written by           |
//! |---------------------------------|------------------------------------|----------------------|
//! | `normed[k]` = RMSNorm_k(x)      | `CudaActivations::normed`          | residual_rmsnorm_fwd |
//! | Mamba `xz` (x_in, z)            | `MambaScratch::xz`                 | in_proj GEMM         |
//! | Mamba `u` = silu(conv(x_in))    | `MambaScratch::u`                  | causal_conv1d_*      |
//! | Mamba `x_dbl` (dt_low, B, C)    | `MambaScratch::x_dbl`              | x_proj GEMM          |
//! | Mamba `delta` (before softplus) | `MambaScratch::delta`              | dt_proj GEMM         |
//! | Mamba `y` (gated scan output)   | `MambaScratch::y`                  | selective_scan_fwd   |
//! | attention `qkv`                 | `AttentionScratch::qkv`            | attn GEMM            |
//! | attention `qkv` after RoPE      | `AttentionScratch::qkv` (in place) | rope_pos_fwd         |
//! | attention `att`                 | `AttentionScratch::att`            | attention_*_fwd      |
//! | MLP `gate`, `up`                | `MlpScratch::gate_up`              | [w1; w2] GEMM        |
//! | MLP `act` = silu(gate) * up     | `MlpScratch::act`                  | swiglu_fused_fwd     |
//! | `final_normed` = RMSNorm_f(x)   | `CudaActivations::final_normed`    | residual_rmsnorm_fwd |
//!
//! The decode state follows: the conv state holds x_in values and the key/value caches hold
//! rows of the roped qkv, both already rounded, as the GPU's `conv`, `k` and `v` (T) hold them;
//! the SSM state stays f32 as on the GPU.
//!
//! Not rounded, as on the GPU: the residual stream x (f32; every sublayer's output projection
//! is a GEMM with an f32 output added into it), the logits (f32), the SSM state h (f32), and
//! what a kernel keeps in registers: softplus(delta + bias), silu(z), exp(delta A) inside the
//! scan; the conv's pre-activation; the attention scores and the online softmax.
//!
//! The fused decoding kernels (kernels/gemv.cu, mamba_decode.cu, decode_persistent.cu) skip
//! some of these buffers but round in registers where the unfused path stores (`stored<T>` in
//! kernels/common.cuh), so the list holds for them too.
//!
//! What this does not reproduce: the tensor-core attention (bf16, head_dim 64 or 128) rounds
//! the unnormalised softmax weights exp(S - running max) to bf16 before its P V product, an
//! intermediate the CPU's attention does not have; the GPU's sums run in other orders (GEMMs,
//! the RMSNorm's sum of squares, split decoding attention), so now and then a value lands on
//! the other side of a bf16 rounding boundary; and the scan's exponentials are the hardware's
//! approximation (~2^-22 relative).

use half::bf16;

/// How the activations of a forward are stored between ops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ActivationStorage {
    /// Every activation kept in f32 as computed.
    #[default]
    F32,
    /// Every activation the GPU stores in bf16 rounded to bf16 (the list in the module doc).
    Bf16,
}

impl ActivationStorage {
    /// Rounds `values` in place to what storing them in this type keeps.
    pub fn store(self, values: &mut [f32]) {
        if self == ActivationStorage::Bf16 {
            values
                .iter_mut()
                .for_each(|v| *v = bf16::from_f32(*v).to_f32());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::LayerState;
    use crate::model::{Activations, BatchShape, CpuModel, DecodeState, MixerActs};
    use crate::testing::{chunked_logits, perturbed_tiny, rel_l2};
    use samba_model::Layout;

    fn is_bf16(v: f32) -> bool {
        v.to_bits() & 0xffff == 0
    }

    /// The perturbed tiny preset, its parameters rounded to bf16 as a bf16 GPU model holds them.
    fn model(layout: Layout) -> CpuModel {
        perturbed_tiny(layout, |p| bf16::from_f32(p).to_f32())
    }

    fn tokens(batch: usize, seq: usize, vocab: usize) -> Vec<u32> {
        (0..batch * seq)
            .map(|i| ((i * 13 + i * i) % vocab) as u32)
            .collect()
    }

    /// Every activation on the list of rounding points, by name.
    fn rounded_activations(acts: &Activations) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = vec![("final_normed".into(), &acts.final_normed)];
        for (k, (normed, mixer)) in acts.normed.iter().zip(&acts.mixers).enumerate() {
            out.push((format!("normed[{k}]"), normed));
            let named: Vec<(&str, &[f32])> = match mixer {
                MixerActs::Mamba(a) => vec![
                    ("x_in", &a.x_in),
                    ("z", &a.z),
                    ("u", &a.u),
                    ("dt_low", &a.dt_low),
                    ("B", &a.b),
                    ("C", &a.c),
                    ("delta", &a.delta),
                    ("y", &a.y),
                ],
                MixerActs::Attention(a) => vec![("qkv", &a.qkv), ("att", &a.att)],
                MixerActs::Mlp(a) => vec![("gate", &a.gate), ("up", &a.up), ("act", &a.act)],
            };
            out.extend(named.into_iter().map(|(n, v)| (format!("{n}[{k}]"), v)));
        }
        out
    }

    /// (conv and key/value caches: stored in T on the GPU, SSM states: f32) of a decode state.
    fn state_parts(state: &DecodeState) -> (Vec<f32>, Vec<f32>) {
        let (mut stored, mut ssm) = (Vec::new(), Vec::new());
        for layer in &state.layers {
            match layer {
                LayerState::Stateless => {}
                LayerState::Mamba { conv, ssm: h } => {
                    stored.extend_from_slice(conv);
                    ssm.extend_from_slice(h);
                }
                LayerState::Attention { caches } => {
                    caches.iter().for_each(|c| c.extend_into(&mut stored))
                }
            }
        }
        (stored, ssm)
    }

    #[test]
    fn f32_storage_keeps_every_bit() {
        let original = [1.0f32 + f32::EPSILON, -3.3e-7, f32::NAN, 1e30];
        let mut v = original;
        ActivationStorage::F32.store(&mut v);
        assert!(v
            .iter()
            .zip(&original)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn bf16_storage_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7: ties go to the even mantissa (1);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6.
        let halfway_down = 1.0 + 2f32.powi(-8);
        let halfway_up = 1.0 + 3.0 * 2f32.powi(-8);
        let just_above = 1.0 + 2f32.powi(-8) + 2f32.powi(-20);
        let mut v = [halfway_down, halfway_up, just_above, -2.5, 0.0];
        ActivationStorage::Bf16.store(&mut v);
        assert_eq!(
            v,
            [1.0, 1.0 + 2f32.powi(-6), 1.0 + 2f32.powi(-7), -2.5, 0.0]
        );
        assert!(v.iter().all(|&x| is_bf16(x)));
    }

    #[test]
    fn f32_storage_gives_the_logits_of_the_default_model() {
        for layout in Layout::ALL {
            let plain = model(layout);
            let f32_storage = model(layout).with_activation_storage(ActivationStorage::F32);
            let bf16_storage = model(layout).with_activation_storage(ActivationStorage::Bf16);
            let shape = BatchShape { batch: 2, seq: 13 };
            let t = tokens(2, 13, plain.config.vocab);
            let want = plain.logits(&t, shape).expect("forward");
            let got = f32_storage.logits(&t, shape).expect("forward");
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{layout}: f32 storage changed the logits"
            );
            // The f32 activations are not bf16 values, so the checks below can fail.
            let mut acts = f32_storage.activations(shape);
            f32_storage.forward(&mut acts, &t).expect("forward");
            for (name, v) in rounded_activations(&acts) {
                assert!(
                    !v.iter().all(|&x| is_bf16(x)),
                    "{layout}: f32 storage left {name} all bf16"
                );
            }
            let rounded = bf16_storage.logits(&t, shape).expect("forward");
            assert!(rounded != want, "{layout}: bf16 storage changed nothing");
        }
    }

    /// bf16 storage: every activation on the list is a bf16 value, the logits move by what
    /// rounding a dozen stages to 8 bits of mantissa does (the GPU's bf16 runs of the tiny preset
    /// land 4e-3..1e-2 from the f32 model), and the decode state holds bf16 values where the
    /// GPU's does.
    #[test]
    fn bf16_storage_rounds_every_stored_activation() {
        for layout in Layout::ALL {
            let f32_model = model(layout);
            let m = model(layout).with_activation_storage(ActivationStorage::Bf16);
            let shape = BatchShape { batch: 2, seq: 13 };
            let t = tokens(2, 13, m.config.vocab);
            let mut acts = m.activations(shape);
            m.forward(&mut acts, &t).expect("forward");
            for (name, v) in rounded_activations(&acts) {
                assert!(
                    v.iter().all(|&x| is_bf16(x)),
                    "{layout}: {name} holds a value that is not bf16"
                );
            }
            let err = rel_l2(&acts.logits, &f32_model.logits(&t, shape).expect("forward"));
            assert!(
                (1e-4..3e-2).contains(&err),
                "{layout}: bf16 storage moved the logits by {err:e} (relative L2)"
            );

            let mut state = DecodeState::new(&m, 2, 64);
            let mut acts = m.activations(shape);
            m.forward_with_state(&mut acts, &t, &mut state)
                .expect("forward");
            let (stored, ssm) = state_parts(&state);
            assert!(stored.iter().all(|&x| is_bf16(x)), "{layout}: state in T");
            assert!(
                ssm.is_empty() || !ssm.iter().all(|&x| is_bf16(x)),
                "{layout}: the SSM state stays f32"
            );
        }
    }

    /// Chunked prefill and token-by-token decoding against one forward, with bf16 storage. Not
    /// bit for bit: the chunks' sums differ from the forward's in the last f32 bit now and then
    /// (max 1.2e-7 absolute in the f32 logits), and where such a difference straddles a bf16
    /// rounding boundary the value moves by a whole bf16 step, so the logits of a flip or two
    /// differ by up to ~5e-4 (relative L2, seen at seq 21). A chunked path that missed a rounding
    /// the forward makes (the roped keys before the cache) differs by 5e-3..8e-3: hence 2e-3.
    #[test]
    fn bf16_storage_chunks_reproduce_the_forward() {
        for layout in Layout::ALL {
            let m = model(layout).with_activation_storage(ActivationStorage::Bf16);
            let (batch, seq) = (2, 2 * m.config.window + 5);
            let t = tokens(batch, seq, m.config.vocab);
            let full = m.logits(&t, BatchShape { batch, seq }).expect("forward");
            let (_, one_pass) = chunked_logits(&m, &t, batch, seq, 64);
            for chunk in [1, 5] {
                let (got, state) = chunked_logits(&m, &t, batch, chunk, 64);
                let err = rel_l2(&got, &full);
                assert!(
                    err <= 2e-3,
                    "{layout}: chunks of {chunk}: logits {err:e} from the forward"
                );
                let err = rel_l2(&state.flatten(), &one_pass.flatten());
                assert!(
                    err <= 2e-3,
                    "{layout}: chunks of {chunk}: state {err:e} from one pass"
                );
            }
        }
    }
}
