//! The MLP's fc2 folded into the SwiGLU phase of the persistent decoding step
//! (kernels/decode_persistent.cu: `persist_fold`). An experiment, measured slower (docs/gpu.md):
//! the kernel's part is compiled in with SAMBA_NVRTC_DEFINES=PERSIST_FC2_FOLD=1, the host's with
//! SAMBA_PERSIST_FC2_FOLD=1 (the host's without the kernel's: the kernel traps on a folded row
//! rather than leave fc2 out).
//!
//! As an op of its own, fc2 (x += W act, W [d_model, hidden]) is a phase of its own: every output
//! needs every hidden unit, so it waits at a grid barrier for the SwiGLU phase, and the phase ends
//! with its slowest block (Samba-1.3B on the H200: last block done ~8.4 us for ~6.6 us of
//! bytes, then the barrier's release). Folded, the block that produced hidden units [c0, c1) in
//! the SwiGLU phase adds their share of every output into the residual,
//!
//!   x[o] += sum_{j in [c0, c1)} W^T[j, o] act[j]     (f32 atomics, act as stored in T),
//!
//! with W^T's rows [c0, c1) streamed into its ring after the SwiGLU's own rows. Every block of
//! that phase stages RMSNorm(x) from x after the barrier, so a block adds into x only after every
//! block counted itself staged (a count per layer, one per block per step). So the step has one
//! phase less per MLP, and the order of fc2's additions changes from run to run.
//!
//! What the fold needs, recorded here from the fused step's launches: W^T, a copy made once per
//! recorded step (28 MB a layer for Samba-1.3B, 0.51 GB in all), and the staged counts.

use cudarc::driver::DevicePtr;

use super::persistent::{adds_into_f32_residual, CONSUMER_WARPS};
use super::xproj_fold::{transpose, transposed_stride};
use super::CudaModel;
use crate::error::Result;
use crate::ops::pdl::RecordedLaunch;
use crate::{Buffer, Elem};

/// The arguments the fold adds to the SwiGLU's table row (kernels/persist_core.cuh:
/// PERSIST_FOLD_W, _SUMS, _N, _STRIDE, _STAGED): fc2^T, the residual, d_model, the stride, the
/// staged count.
pub(crate) const SWIGLU_ARGS: [usize; 5] = [16, 17, 18, 19, 15];

/// Output fours one consumer thread holds (kernels/decode_persistent.cu: PERSIST_FOLD_GROUPS):
/// d_model <= 4 FOLD_GROUPS consumers.
pub(crate) const FOLD_GROUPS: usize = 6;

/// u64 from one layer's staged count to the next (each on a 128-byte line of its own).
const COUNT_STRIDE: usize = 16;

/// One MLP of the recorded step: its SwiGLU and fc2 launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fc2Site {
    /// The launches' indices in the recording.
    pub swiglu: usize,
    pub fc2: usize,
    /// fc2's weight [d_model, hidden] (a device address in the model's parameters).
    pub weight: u64,
    /// The f32 residual fc2 adds into (and the SwiGLU normalises).
    pub residual: u64,
    pub hidden: usize,
    pub d_model: usize,
}

/// The MLPs whose fc2 can be folded: a SwiGLU of one row normalising the residual x, then fc2 of
/// its act (one row, no norm) added into x (f32, +=).
pub(crate) fn fc2_sites(launches: &[RecordedLaunch]) -> Vec<Fc2Site> {
    let int = |l: &RecordedLaunch, i: usize| l.args[i] as u32 as usize;
    launches
        .windows(2)
        .enumerate()
        .filter_map(|(i, w)| {
            let [swiglu, fc2] = w else { return None };
            let shapes_ok = swiglu.what == "gemv_swiglu_fwd"
                && fc2.what == "gemv_fwd"
                && swiglu.args.len() == 12
                && fc2.args.len() == 13;
            if !shapes_ok {
                return None;
            }
            let hidden = int(swiglu, 10);
            let linked = adds_into_f32_residual(fc2, swiglu.args[0], hidden) // fc2 of act
                && fc2.args[0] == swiglu.args[4] // the residual the SwiGLU normalises
                && swiglu.args[4] != 0
                && int(swiglu, 8) == 1; // one row
            linked.then_some(Fc2Site {
                swiglu: i,
                fc2: i + 1,
                weight: fc2.args[8],
                residual: fc2.args[0],
                hidden,
                d_model: int(fc2, 11),
            })
        })
        .collect()
}

/// The folded MLPs' device buffers, and the words they add to the table's rows.
pub(crate) struct Fc2Fold<T: Elem> {
    sites: Vec<Fc2Site>,
    /// [sites][hidden][d_model]: each layer's W^T.
    weights: Buffer<T>,
    /// [sites][COUNT_STRIDE]: each layer's staged count (never reset: a step adds the grid).
    staged: Buffer<u64>,
}

impl<T: Elem> Fc2Fold<T> {
    /// The W^T copies and zeroed counts of `sites` (None unless there are any, all of one shape
    /// whose W^T rows are whole 16-byte vectors and whose outputs are whole fours a thread can
    /// hold, with 16-byte aligned residuals and weights in the model's parameters).
    pub fn build(model: &CudaModel<T>, sites: Vec<Fc2Site>) -> Result<Option<Fc2Fold<T>>> {
        let Some(first) = sites.first().copied() else {
            return Ok(None);
        };
        let elem = size_of::<T>();
        let (hidden, d) = (first.hidden, first.d_model);
        let fits = sites
            .iter()
            .all(|s| s.hidden == hidden && s.d_model == d && s.residual % 16 == 0)
            && transposed_stride(d, elem) == d
            && d % 4 == 0
            && d <= 4 * FOLD_GROUPS * 32 * CONSUMER_WARPS;
        if !fits {
            return Ok(None);
        }
        let dev = model.device();
        let len = d * hidden;
        let mut host = Vec::with_capacity(sites.len() * len);
        for s in &sites {
            let Some(w) = model.download_params_at(s.weight, len)? else {
                return Ok(None);
            };
            host.extend(transpose(&w, d, hidden, d));
        }
        Ok(Some(Fc2Fold {
            weights: dev.upload(&host)?,
            staged: dev.zeros::<u64>(sites.len() * COUNT_STRIDE)?,
            sites,
        }))
    }

    pub fn sites(&self) -> &[Fc2Site] {
        &self.sites
    }

    /// A row of W^T in elements (d_model).
    pub fn stride(&self) -> usize {
        self.sites[0].d_model
    }

    /// The fold's words in the table: (launch, argument, value) for the SwiGLUs' rows
    /// (kernels/decode_persistent.cu: `PersistDense::fold_*`).
    pub fn words(&self) -> Vec<(usize, usize, u64)> {
        let stream = self.weights.stream().clone();
        let (w, _g0) = self.weights.device_ptr(&stream);
        let (staged, _g1) = self.staged.device_ptr(&stream);
        let first = self.sites[0];
        let layer_bytes = (first.hidden * first.d_model * size_of::<T>()) as u64;
        let mut words = Vec::new();
        for (i, s) in self.sites.iter().enumerate() {
            let values = [
                w + i as u64 * layer_bytes,
                s.residual,
                s.d_model as u64,
                s.d_model as u64,
                staged + (i * COUNT_STRIDE * size_of::<u64>()) as u64,
            ];
            words.extend(
                SWIGLU_ARGS
                    .iter()
                    .zip(values)
                    .map(|(&a, v)| (s.swiglu, a, v)),
            );
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::super::persistent::residual_gemv;
    use super::*;

    /// An MLP as the fused step records it: x at 0x1000, act at 0x2000 (d 2304, hidden 6144).
    fn mlp() -> Vec<RecordedLaunch> {
        vec![
            RecordedLaunch::with_args(
                "gemv_swiglu_fwd",
                &[(0, 0x2000), (4, 0x1000), (8, 1), (9, 2304), (10, 6144)],
                12,
            ),
            residual_gemv(0x1000, 0x2000, 0x9000, 6144, 2304),
        ]
    }

    #[test]
    fn a_swiglu_then_fc2_into_its_residual_is_a_site() {
        let mut launches = vec![RecordedLaunch::with_args("embedding_residual_fwd", &[], 6)];
        launches.extend(mlp());
        launches.push(RecordedLaunch::with_args("gemv_rope_fwd", &[], 17));
        launches.extend(mlp());
        let sites = fc2_sites(&launches);
        assert_eq!(sites.len(), 2);
        assert_eq!(
            sites[0],
            Fc2Site {
                swiglu: 1,
                fc2: 2,
                weight: 0x9000,
                residual: 0x1000,
                hidden: 6144,
                d_model: 2304
            }
        );
        assert_eq!((sites[1].swiglu, sites[1].fc2), (4, 5));
    }

    #[test]
    fn fc2_of_another_input_output_or_shape_is_not_folded() {
        let cases: [(usize, usize, u64); 7] = [
            (1, 3, 0x1111), // reads something else than act
            (1, 5, 0x5000), // with a norm
            (1, 2, 1),      // stores f32 instead of adding
            (1, 0, 0x3000), // adds into another buffer than the residual normalised
            (1, 9, 2),      // two rows
            (0, 8, 2),      // a SwiGLU of two rows
            (1, 10, 6000),  // another input length than hidden
        ];
        for (which, arg, value) in cases {
            let mut l = mlp();
            l[which].args[arg] = value;
            assert!(
                fc2_sites(&l).is_empty(),
                "launch {which} arg {arg} = {value:#x}"
            );
        }
    }
}
