//! Mamba's x_proj folded into in_proj's phase of the persistent decoding step
//! (kernels/decode_persistent.cu: `persist_fold`).
//!
//! As an op of its own, x_proj (x_dbl = W u, W [R + 2N, E]) is a phase of its own: every output
//! needs every channel of u, so it waits at a grid barrier for the conv step, and its few rows
//! (176 for Samba-1.3B, over 264 blocks) stream in ~0.4 us of a ~4.7 us phase. Folded, the block
//! that produced channels [c0, c1) of u in the conv step adds their share of every output,
//!
//!   x_dbl[j] += sum_{e in [c0, c1)} W^T[e, j] u[e]     (f32 atomics into `sums`),
//!
//! with W^T's rows [c0, c1) streamed into its ring like the op's own weight rows, the additions
//! spread over FOLD_COPIES copies of the sums. The scan step adds the copies after the barrier it
//! waits at anyway (rounded to T, as x_proj's output is
//! stored), and zeroes the next folded layer's sums for its next use. So the step has one phase
//! less per Mamba layer, and the order of x_proj's additions changes from run to run.
//!
//! What the fold needs, recorded here from the fused step's launches: W^T, a copy made once per
//! recorded step (1.6 MB a layer for Samba-1.3B), with rows padded to whole 16-byte vectors (a
//! bulk copy per row), and f32 sums per folded layer. At least two folded layers, so each
//! layer's sums are zeroed by another layer's scan step (kernels/decode_persistent.cu says when).

use cudarc::driver::DevicePtr;

use super::CudaModel;
use crate::error::Result;
use crate::ops::pdl::RecordedLaunch;
use crate::{Buffer, Elem};

/// Copies of each layer's x_dbl sums the blocks spread their additions over
/// (kernels/decode_persistent.cu: PERSIST_FOLD_COPIES).
pub(crate) const FOLD_COPIES: usize = 8;

/// The arguments the fold adds to the table's rows (kernels/persist_core.cuh: PERSIST_FOLD_*,
/// PERSIST_SCAN_*): the conv step's x_proj^T, x_dbl's sums, x_dbl's length and the stride; the
/// scan step's sums, the next layer's sums and the stride.
pub(crate) const CONV_ARGS: [usize; 4] = [16, 17, 18, 19];
pub(crate) const SCAN_ARGS: [usize; 3] = [13, 14, 16];

/// One Mamba layer of the recorded step: its in_proj + conv step, x_proj and scan step launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FoldSite {
    /// The launches' indices in the recording.
    pub conv: usize,
    pub x_proj: usize,
    pub scan: usize,
    /// x_proj's weight [n_out, d_inner] (a device address in the model's parameters).
    pub weight: u64,
    pub d_inner: usize,
    pub n_out: usize,
}

/// The Mamba layers whose x_proj can be folded: a conv step, then x_proj of its u (one row, no
/// norm, stored as T), then the scan step reading x_proj's output as x_dbl = [dt_low | B | C].
pub(crate) fn fold_sites(launches: &[RecordedLaunch]) -> Vec<FoldSite> {
    let int = |l: &RecordedLaunch, i: usize| l.args[i] as u32 as usize;
    launches
        .windows(3)
        .enumerate()
        .filter_map(|(i, w)| {
            let [conv, gemv, scan] = w else { return None };
            let shapes_ok = conv.what == "gemv_conv_fwd"
                && gemv.what == "gemv_fwd"
                && scan.what == "mamba_scan_step_fwd"
                && conv.args.len() == 16
                && gemv.args.len() == 13
                && scan.args.len() == 13;
            if !shapes_ok {
                return None;
            }
            let d_inner = int(conv, 5);
            let n_out = int(gemv, 11);
            let linked = gemv.args[3] == conv.args[0] // x_proj reads the conv step's u
                && gemv.args[5] == 0 // without a norm
                && int(gemv, 2) == 0 // stores T
                && int(gemv, 9) == 1 // one row
                && int(gemv, 10) == d_inner
                && gemv.args[0] == scan.args[2] // the scan step reads it as x_dbl
                && scan.grid.1 == 1 // batch 1
                && int(scan, 10) == d_inner
                && n_out == int(scan, 12) + 2 * int(scan, 11);
            linked.then_some(FoldSite {
                conv: i,
                x_proj: i + 1,
                scan: i + 2,
                weight: gemv.args[8],
                d_inner,
                n_out,
            })
        })
        .collect()
}

/// A row of W^T in elements: n_out rounded up to whole 16-byte vectors.
pub(crate) fn transposed_stride(n_out: usize, elem: usize) -> usize {
    (n_out * elem).next_multiple_of(16) / elem
}

/// W [n_out, d_inner] (row-major) as W^T [d_inner, stride], zero-padded. (In tiles of 32 rows of
/// W, so the writes of a tile are runs of 32 and its rows stay in cache: fc2 of Samba-1.3B is
/// 14M elements a layer.)
pub(crate) fn transpose<T: Elem>(w: &[T], n_out: usize, d_inner: usize, stride: usize) -> Vec<T> {
    const TILE: usize = 32;
    let mut t = vec![T::default(); d_inner * stride];
    for j0 in (0..n_out).step_by(TILE) {
        let j1 = (j0 + TILE).min(n_out);
        for e in 0..d_inner {
            for j in j0..j1 {
                t[e * stride + j] = w[j * d_inner + e];
            }
        }
    }
    t
}

/// The folded layers' device buffers, and the words they add to the table's rows.
pub(crate) struct XProjFold<T: Elem> {
    sites: Vec<FoldSite>,
    /// [sites][d_inner][stride]: each layer's W^T.
    weights: Buffer<T>,
    /// [sites][FOLD_COPIES][stride]: each layer's x_dbl sums.
    sums: Buffer<f32>,
    stride: usize,
    sums_len: usize,
}

impl<T: Elem> XProjFold<T> {
    /// The W^T copies and zeroed sums of `sites` (None unless there are two or more, all of one
    /// shape, whose weights lie in the model's parameters).
    pub fn build(model: &CudaModel<T>, sites: Vec<FoldSite>) -> Result<Option<XProjFold<T>>> {
        let Some(first) = sites.first().copied() else {
            return Ok(None);
        };
        let same_shape = sites
            .iter()
            .all(|s| s.d_inner == first.d_inner && s.n_out == first.n_out);
        if sites.len() < 2 || !same_shape {
            return Ok(None);
        }
        let dev = model.device();
        let len = first.n_out * first.d_inner;
        let stride = transposed_stride(first.n_out, size_of::<T>());
        let mut host = Vec::with_capacity(sites.len() * first.d_inner * stride);
        for s in &sites {
            let Some(w) = model.download_params_at(s.weight, len)? else {
                return Ok(None);
            };
            host.extend(transpose(&w, s.n_out, s.d_inner, stride));
        }
        // the sums of a layer: FOLD_COPIES copies of x_dbl, a row of W^T apart
        let sums_len = FOLD_COPIES * stride;
        Ok(Some(XProjFold {
            weights: dev.upload(&host)?,
            sums: dev.zeros::<f32>(sites.len() * sums_len)?,
            stride,
            sums_len,
            sites,
        }))
    }

    pub fn sites(&self) -> &[FoldSite] {
        &self.sites
    }

    /// A row of W^T in elements.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The fold's words in the table: (launch, argument, value) for the conv steps' and the scan
    /// steps' rows (kernels/decode_persistent.cu: `PersistDense::fold_*`, `persist_scan_sums`).
    pub fn words(&self) -> Vec<(usize, usize, u64)> {
        let stream = self.weights.stream().clone();
        let (w, _g0) = self.weights.device_ptr(&stream);
        let (sums, _g1) = self.sums.device_ptr(&stream);
        let layer_bytes = (self.sites[0].d_inner * self.stride * size_of::<T>()) as u64;
        let sums_at = |i: usize| sums + (i * self.sums_len * size_of::<f32>()) as u64;
        let mut words = Vec::new();
        for (i, s) in self.sites.iter().enumerate() {
            words.extend([
                (s.conv, CONV_ARGS[0], w + i as u64 * layer_bytes),
                (s.conv, CONV_ARGS[1], sums_at(i)),
                (s.conv, CONV_ARGS[2], s.n_out as u64),
                (s.conv, CONV_ARGS[3], self.stride as u64),
                (s.scan, SCAN_ARGS[0], sums_at(i)),
                (s.scan, SCAN_ARGS[1], sums_at((i + 1) % self.sites.len())),
                (s.scan, SCAN_ARGS[2], self.stride as u64),
            ]);
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Mamba layer as the fused step records it: u at 0x1000, x_dbl at 0x2000 (E 4608, N 16,
    /// R 144: 176 outputs).
    fn layer() -> Vec<RecordedLaunch> {
        vec![
            RecordedLaunch::with_args("gemv_conv_fwd", &[(0, 0x1000), (5, 4608)], 16),
            RecordedLaunch::with_args(
                "gemv_fwd",
                &[
                    (0, 0x2000),
                    (3, 0x1000),
                    (8, 0x9000),
                    (9, 1),
                    (10, 4608),
                    (11, 176),
                ],
                13,
            ),
            RecordedLaunch::with_args(
                "mamba_scan_step_fwd",
                &[(2, 0x2000), (10, 4608), (11, 16), (12, 144)],
                13,
            ),
        ]
    }

    #[test]
    fn a_conv_x_proj_scan_run_is_a_site() {
        let mut launches = vec![RecordedLaunch::with_args("embedding_residual_fwd", &[], 6)];
        launches.extend(layer());
        launches.push(RecordedLaunch::with_args("gemv_fwd", &[], 13));
        launches.extend(layer());
        let sites = fold_sites(&launches);
        assert_eq!(sites.len(), 2);
        assert_eq!(
            sites[0],
            FoldSite {
                conv: 1,
                x_proj: 2,
                scan: 3,
                weight: 0x9000,
                d_inner: 4608,
                n_out: 176
            }
        );
        assert_eq!((sites[1].conv, sites[1].scan), (5, 7));
    }

    #[test]
    fn x_proj_of_another_input_or_shape_is_not_folded() {
        let cases: [(usize, usize, u64); 6] = [
            (1, 3, 0x1111), // reads something else than u
            (1, 5, 0x5000), // with a norm
            (1, 2, 1),      // stores f32
            (1, 9, 2),      // two rows
            (1, 11, 170),   // not R + 2N outputs
            (2, 2, 0x3000), // the scan step reads another x_dbl
        ];
        for (which, arg, value) in cases {
            let mut l = layer();
            l[which].args[arg] = value;
            assert!(
                fold_sites(&l).is_empty(),
                "launch {which} arg {arg} = {value:#x}"
            );
        }
    }

    #[test]
    fn the_transposed_copy_pads_rows_to_16_bytes() {
        // W [3, 2] = [[1, 2], [3, 4], [5, 6]] in bf16: W^T rows of 3 padded to 8 elements
        assert_eq!(transposed_stride(3, 2), 8);
        assert_eq!(transposed_stride(176, 2), 176);
        assert_eq!(transposed_stride(176, 4), 176);
        assert_eq!(transposed_stride(5, 4), 8);
        let w: Vec<f32> = (1..=6).map(|v| v as f32).collect();
        let t = transpose(&w, 3, 2, 4);
        assert_eq!(t, [1.0, 3.0, 5.0, 0.0, 2.0, 4.0, 6.0, 0.0]);
    }
}
