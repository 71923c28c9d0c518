//! Mamba-1's selective scan in f32, with the D skip connection and the SiLU(z) gate fused in:
//! the recurrence over time that makes Mamba a state space model. Every (batch, channel) pair
//! is an independent lane with a state of d_state numbers; B and C are shared by all channels of
//! a time step, A, D and the delta bias by all time steps of a channel.

use rayon::prelude::*;

use super::{silu, silu_grad, softplus, softplus_grad};

/// Channels per task. A constant, not derived from the thread count: the backward sums dB and dC
/// over the channel blocks in block order, so results are the same on any pool.
const CHANNELS_PER_TASK: usize = 32;

/// Sizes of one selective scan.
#[derive(Clone, Copy, Debug)]
pub struct ScanDims {
    pub batch: usize,
    pub seq: usize,
    /// Channels E (expand * d_model).
    pub d_inner: usize,
    /// State size N per channel.
    pub d_state: usize,
}

impl ScanDims {
    /// Elements of a scan state, [batch, d_inner, d_state].
    pub fn state_len(&self) -> usize {
        self.batch * self.d_inner * self.d_state
    }

    /// (name, elements, shape) of every input, in the order of the fields of [`ScanInputs`].
    fn input_shapes(&self) -> [(&'static str, usize, &'static str); 8] {
        let lanes = self.batch * self.seq * self.d_inner;
        let states = self.batch * self.seq * self.d_state;
        let (e, a) = (self.d_inner, self.d_inner * self.d_state);
        [
            ("u", lanes, "[batch, seq, d_inner]"),
            ("delta_raw", lanes, "[batch, seq, d_inner]"),
            ("delta_bias", e, "[d_inner]"),
            ("a_log", a, "[d_inner, d_state]"),
            ("b", states, "[batch, seq, d_state]"),
            ("c", states, "[batch, seq, d_state]"),
            ("d_skip", e, "[d_inner]"),
            ("z", lanes, "[batch, seq, d_inner]"),
        ]
    }

    fn blocks_per_batch(&self) -> usize {
        self.d_inner.div_ceil(CHANNELS_PER_TASK)
    }

    /// Task `i` of the flat list of (batch, channel block): (batch, first channel, channels).
    fn block(&self, i: usize) -> (usize, usize, usize) {
        let nblk = self.blocks_per_batch();
        let e0 = (i % nblk) * CHANNELS_PER_TASK;
        (i / nblk, e0, CHANNELS_PER_TASK.min(self.d_inner - e0))
    }
}

/// The inputs of one scan.
pub struct ScanInputs<'a> {
    /// [batch, seq, d_inner]: the conv output, the scan's input.
    pub u: &'a [f32],
    /// [batch, seq, d_inner]: dt_proj(dt_low), before the bias and softplus.
    pub delta_raw: &'a [f32],
    /// [d_inner]: dt_proj.bias.
    pub delta_bias: &'a [f32],
    /// [d_inner, d_state]: A = -exp(a_log).
    pub a_log: &'a [f32],
    /// [batch, seq, d_state]
    pub b: &'a [f32],
    /// [batch, seq, d_state]
    pub c: &'a [f32],
    /// [d_inner]: D.
    pub d_skip: &'a [f32],
    /// [batch, seq, d_inner]: the gate.
    pub z: &'a [f32],
}

impl ScanInputs<'_> {
    fn all(&self) -> [&[f32]; 8] {
        [
            self.u,
            self.delta_raw,
            self.delta_bias,
            self.a_log,
            self.b,
            self.c,
            self.d_skip,
            self.z,
        ]
    }

    fn check(&self, d: ScanDims) {
        assert!(d.d_inner >= 1, "selective scan: d_inner must be at least 1");
        assert!(d.d_state >= 1, "selective scan: d_state must be at least 1");
        for (x, (name, len, shape)) in self.all().iter().zip(d.input_shapes()) {
            assert_eq!(x.len(), len, "selective scan: {name} is {shape}");
        }
    }
}

/// Gradients of every input of [`ScanInputs`], same shapes; the backward adds into them.
pub struct ScanGrads<'a> {
    pub du: &'a mut [f32],
    pub ddelta_raw: &'a mut [f32],
    pub ddelta_bias: &'a mut [f32],
    pub da_log: &'a mut [f32],
    pub db: &'a mut [f32],
    pub dc: &'a mut [f32],
    pub dd_skip: &'a mut [f32],
    pub dz: &'a mut [f32],
}

/// dst += src, elementwise.
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// One time step of one lane, in place: h = exp(delta A) h + (delta u) B, and the output before
/// the gate y = h . C + D u. The forward and the backward's recomputation share this, so both
/// see the same bits.
#[inline]
fn lane_step(
    h: &mut [f32],
    a: &[f32],
    delta: f32,
    u: f32,
    b_t: &[f32],
    c_t: &[f32],
    d: f32,
) -> f32 {
    let du = delta * u;
    let mut y = 0.0;
    for (((h, a), b), c) in h.iter_mut().zip(a).zip(b_t).zip(c_t) {
        *h = (delta * a).exp() * *h + du * b;
        y += *h * c;
    }
    y + d * u
}

// ----------------------------------------------------------------------------------------------
// forward, per batch b, channel e, state n:
//   delta[t,e] = softplus(delta_raw[t,e] + delta_bias[e])          (identity above 20)
//   A[e,n]     = -exp(a_log[e,n])
//   h[t,e,n]   = exp(delta[t,e] A[e,n]) h[t-1,e,n] + delta[t,e] u[t,e] B[t,n]   (h[-1] = state_in or 0)
//   y[t,e]     = sum_n h[t,e,n] C[t,n] + D[e] u[t,e]
//   out[t,e]   = y[t,e] * silu(z[t,e])

/// The scan over the channels e0 .. e0+len of sequence b: returns the outputs [seq, len] and the
/// final states [len, d_state].
fn scan_block_fwd(
    inp: &ScanInputs,
    d: ScanDims,
    b: usize,
    e0: usize,
    len: usize,
    state_in: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let (seq, n_st, e_all) = (d.seq, d.d_state, d.d_inner);
    let mut ys = vec![0.0f32; seq * len];
    let mut hs = match state_in {
        Some(st) => st[(b * e_all + e0) * n_st..][..len * n_st].to_vec(),
        None => vec![0.0f32; len * n_st],
    };
    // A[e, n] = -exp(a_log[e, n]) for the block's channels
    let a: Vec<f32> = inp.a_log[e0 * n_st..][..len * n_st]
        .iter()
        .map(|l| -l.exp())
        .collect();
    // time outermost: the block's states stay in cache and each step reads contiguous rows
    for t in 0..seq {
        let row = b * seq + t;
        let b_t = &inp.b[row * n_st..][..n_st];
        let c_t = &inp.c[row * n_st..][..n_st];
        for (j, (h, a)) in hs
            .chunks_exact_mut(n_st)
            .zip(a.chunks_exact(n_st))
            .enumerate()
        {
            let (e, i) = (e0 + j, row * e_all + e0 + j);
            let delta = softplus(inp.delta_raw[i] + inp.delta_bias[e]);
            let y = lane_step(h, a, delta, inp.u[i], b_t, c_t, inp.d_skip[e]);
            ys[t * len + j] = y * silu(inp.z[i]);
        }
    }
    (ys, hs)
}

/// Selective scan with D skip and SiLU(z) gate. out: [batch, seq, d_inner]; shapes of the inputs
/// in [`ScanInputs`]. state_in, state_out: [batch, d_inner, d_state], h before the first step
/// (zero without it) and after the last, so chunks with the state carried equal one pass.
pub fn selective_scan_fwd(
    out: &mut [f32],
    inp: &ScanInputs,
    dims: ScanDims,
    state_in: Option<&[f32]>,
    state_out: Option<&mut [f32]>,
) {
    inp.check(dims);
    assert_eq!(
        out.len(),
        inp.u.len(),
        "selective scan: out is [batch, seq, d_inner]"
    );
    if let Some(st) = state_in {
        assert_eq!(
            st.len(),
            dims.state_len(),
            "selective scan: state_in is [batch, d_inner, d_state]"
        );
    }
    let (seq, n_st, e_all) = (dims.seq, dims.d_state, dims.d_inner);
    let nblk = dims.blocks_per_batch();

    let blocks: Vec<(Vec<f32>, Vec<f32>)> = (0..dims.batch * nblk)
        .into_par_iter()
        .map(|i| {
            let (b, e0, len) = dims.block(i);
            scan_block_fwd(inp, dims, b, e0, len, state_in)
        })
        .collect();

    out.par_chunks_mut(e_all)
        .enumerate()
        .for_each(|(row, out_row)| {
            let (b, t) = (row / seq, row % seq);
            for blk in 0..nblk {
                let (_, e0, len) = dims.block(b * nblk + blk);
                out_row[e0..e0 + len].copy_from_slice(&blocks[b * nblk + blk].0[t * len..][..len]);
            }
        });
    if let Some(st) = state_out {
        assert_eq!(
            st.len(),
            dims.state_len(),
            "selective scan: state_out is [batch, d_inner, d_state]"
        );
        for (i, (_, h)) in blocks.iter().enumerate() {
            let (b, e0, _) = dims.block(i);
            st[(b * e_all + e0) * n_st..][..h.len()].copy_from_slice(h);
        }
    }
}

// ----------------------------------------------------------------------------------------------
// backward (training: h[-1] = 0), per lane (b, e), with dy = dL/dy and g[t,n] = dL/dh[t,n]:
//   out = y silu(z)     => dy[t] = dout[t] silu(z[t]);  dz[t] += dout[t] y[t] silu'(z[t])
//   y = sum_n h C + D u => dC[t,n] += dy[t] h[t,n];  dD += dy[t] u[t];  du[t] += dy[t] D
//   h[t] feeds y[t] and h[t+1]:
//                       => g[t,n] = dy[t] C[t,n] + exp(delta[t+1] A[n]) g[t+1,n]
//   h[t] = exp(delta A) h[t-1] + delta u B:
//                       => ddelta[t] = sum_n g[t,n] (A[n] exp(delta[t] A[n]) h[t-1,n] + u[t] B[t,n])
//                          du[t]    += sum_n g[t,n] delta[t] B[t,n]
//                          dB[t,n]  += g[t,n] delta[t] u[t]
//                          dA[n]    += sum_t g[t,n] delta[t] exp(delta[t] A[n]) h[t-1,n]
//   A = -exp(a_log)     => da_log[n] += dA[n] A[n]
//   delta = softplus(raw + bias):
//                       => ddelta_raw[t] += ddelta[t] softplus'(raw[t] + bias);  ddelta_bias += same
// The forward does not store h: each lane recomputes its h[t, n] into a [seq, d_state] scratch
// (with the forward's own lane_step, so the same bits), then runs the reverse recurrence.

/// Gradients of one task (sequence b, channels e0 .. e0+len). Per-lane gradients are laid out
/// [seq, len]; db and dc [seq, d_state] are this block's partial sums over its channels; the
/// parameter gradients [len, d_state] and [len] are this sequence's partial sums over time.
struct BlockGrads {
    du: Vec<f32>,
    ddelta_raw: Vec<f32>,
    dz: Vec<f32>,
    db: Vec<f32>,
    dc: Vec<f32>,
    da_log: Vec<f32>,
    dd_skip: Vec<f32>,
    ddelta_bias: Vec<f32>,
}

fn scan_block_bwd(
    dout: &[f32],
    inp: &ScanInputs,
    d: ScanDims,
    b: usize,
    e0: usize,
    len: usize,
) -> BlockGrads {
    let (seq, n_st, e_all) = (d.seq, d.d_state, d.d_inner);
    let mut gr = BlockGrads {
        du: vec![0.0; seq * len],
        ddelta_raw: vec![0.0; seq * len],
        dz: vec![0.0; seq * len],
        db: vec![0.0; seq * n_st],
        dc: vec![0.0; seq * n_st],
        da_log: vec![0.0; len * n_st],
        dd_skip: vec![0.0; len],
        ddelta_bias: vec![0.0; len],
    };
    // per-lane scratch, reused across the block's lanes
    let mut hs = vec![0.0f32; seq * n_st]; // h[t, n]
    let mut delta = vec![0.0f32; seq];
    let mut y_pre = vec![0.0f32; seq]; // y before the gate
    let mut a = vec![0.0f32; n_st];
    let mut carry = vec![0.0f32; n_st]; // exp(delta[t+1] A) g[t+1]
    let mut da = vec![0.0f32; n_st];

    for j in 0..len {
        let e = e0 + j;
        for (a, l) in a.iter_mut().zip(&inp.a_log[e * n_st..][..n_st]) {
            *a = -l.exp();
        }
        // recompute the forward states of this lane
        for t in 0..seq {
            let i = (b * seq + t) * e_all + e;
            delta[t] = softplus(inp.delta_raw[i] + inp.delta_bias[e]);
            let (done, rest) = hs.split_at_mut(t * n_st);
            let h = &mut rest[..n_st];
            match t {
                0 => h.fill(0.0),
                _ => h.copy_from_slice(&done[(t - 1) * n_st..]),
            }
            let b_t = &inp.b[(b * seq + t) * n_st..][..n_st];
            let c_t = &inp.c[(b * seq + t) * n_st..][..n_st];
            y_pre[t] = lane_step(h, &a, delta[t], inp.u[i], b_t, c_t, inp.d_skip[e]);
        }

        // reverse recurrence
        carry.fill(0.0);
        da.fill(0.0);
        let (mut dd_acc, mut ddb_acc) = (0.0f32, 0.0f32);
        for t in (0..seq).rev() {
            let i = (b * seq + t) * e_all + e;
            let row = b * seq + t;
            let (u, z, go, dl) = (inp.u[i], inp.z[i], dout[i], delta[t]);
            gr.dz[t * len + j] = go * y_pre[t] * silu_grad(z);
            let dy = go * silu(z);
            dd_acc += dy * u;
            let b_t = &inp.b[row * n_st..][..n_st];
            let c_t = &inp.c[row * n_st..][..n_st];
            let h_t = &hs[t * n_st..][..n_st];
            let h_prev = (t > 0).then(|| &hs[(t - 1) * n_st..][..n_st]);
            let db_t = &mut gr.db[t * n_st..][..n_st];
            let dc_t = &mut gr.dc[t * n_st..][..n_st];
            let mut du_acc = dy * inp.d_skip[e];
            let mut ddelta = 0.0f32;
            for n in 0..n_st {
                let g = dy * c_t[n] + carry[n];
                dc_t[n] += dy * h_t[n];
                let decay = (dl * a[n]).exp();
                let hp = h_prev.map_or(0.0, |h| h[n]);
                du_acc += g * dl * b_t[n];
                ddelta += g * (a[n] * decay * hp + u * b_t[n]);
                db_t[n] += g * dl * u;
                da[n] += g * dl * decay * hp;
                carry[n] = decay * g;
            }
            gr.du[t * len + j] = du_acc;
            let dr = ddelta * softplus_grad(inp.delta_raw[i] + inp.delta_bias[e]);
            gr.ddelta_raw[t * len + j] = dr;
            ddb_acc += dr;
        }
        for ((dst, da), a) in gr.da_log[j * n_st..][..n_st].iter_mut().zip(&da).zip(&a) {
            *dst = da * a;
        }
        gr.dd_skip[j] = dd_acc;
        gr.ddelta_bias[j] = ddb_acc;
    }
    gr
}

/// Backward of [`selective_scan_fwd`] from a zero initial state; adds into every gradient of
/// `grads`. dout: [batch, seq, d_inner]. Tasks are (sequence, block of channels); their partial
/// sums of dB, dC (over channels) and of the parameter gradients (over sequences) are reduced in
/// a fixed order, so the result does not depend on the thread count. Extra memory: about three
/// [batch, seq, d_inner] buffers plus a [batch, seq, d_state] per block of 32 channels.
pub fn selective_scan_bwd(grads: &mut ScanGrads, dout: &[f32], inp: &ScanInputs, dims: ScanDims) {
    inp.check(dims);
    assert_eq!(
        dout.len(),
        inp.u.len(),
        "selective scan: dout is [batch, seq, d_inner]"
    );
    let g = grads;
    let lens = [
        g.du.len(),
        g.ddelta_raw.len(),
        g.ddelta_bias.len(),
        g.da_log.len(),
        g.db.len(),
        g.dc.len(),
        g.dd_skip.len(),
        g.dz.len(),
    ];
    for (len, (name, want, shape)) in lens.into_iter().zip(dims.input_shapes()) {
        assert_eq!(len, want, "selective scan: d{name} is {shape}");
    }
    let (seq, n_st, e_all) = (dims.seq, dims.d_state, dims.d_inner);
    let nblk = dims.blocks_per_batch();

    let blocks: Vec<BlockGrads> = (0..dims.batch * nblk)
        .into_par_iter()
        .map(|i| {
            let (b, e0, len) = dims.block(i);
            scan_block_bwd(dout, inp, dims, b, e0, len)
        })
        .collect();

    // per-lane gradients: every element comes from exactly one block
    g.du.par_chunks_mut(e_all)
        .zip(g.ddelta_raw.par_chunks_mut(e_all))
        .zip(g.dz.par_chunks_mut(e_all))
        .enumerate()
        .for_each(|(row, ((du, dr), dz))| {
            let (b, t) = (row / seq, row % seq);
            for blk in 0..nblk {
                let (_, e0, len) = dims.block(b * nblk + blk);
                let src = &blocks[b * nblk + blk];
                add_into(&mut du[e0..e0 + len], &src.du[t * len..][..len]);
                add_into(&mut dr[e0..e0 + len], &src.ddelta_raw[t * len..][..len]);
                add_into(&mut dz[e0..e0 + len], &src.dz[t * len..][..len]);
            }
        });

    // dB, dC: sum over the channel blocks of the sequence, in block order
    g.db.par_chunks_mut(n_st)
        .zip(g.dc.par_chunks_mut(n_st))
        .enumerate()
        .for_each(|(row, (db, dc))| {
            let (b, t) = (row / seq, row % seq);
            for src in &blocks[b * nblk..(b + 1) * nblk] {
                add_into(db, &src.db[t * n_st..][..n_st]);
                add_into(dc, &src.dc[t * n_st..][..n_st]);
            }
        });

    // parameter gradients: sum over the sequences, in batch order
    for (i, src) in blocks.iter().enumerate() {
        let (_, e0, len) = dims.block(i);
        add_into(&mut g.da_log[e0 * n_st..][..len * n_st], &src.da_log);
        add_into(&mut g.dd_skip[e0..e0 + len], &src.dd_skip);
        add_into(&mut g.ddelta_bias[e0..e0 + len], &src.ddelta_bias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_gradient, dot, random_vec};

    /// Owned inputs in the order of [`ScanInputs`]' fields (see `input_shapes`), so a test can
    /// perturb any one of them.
    #[derive(Clone)]
    struct Inputs([Vec<f32>; 8]);
    const U: usize = 0;
    const DELTA_RAW: usize = 1;
    const B: usize = 4;
    const C: usize = 5;
    const Z: usize = 7;

    impl Inputs {
        /// Well-conditioned inputs: delta_raw in -2..1 (delta about 0.1..1.5), a_log = ln(n+1)
        /// plus noise as Mamba initialises it, the rest U(-1, 1) (delta_bias U(-0.5, 0.5)).
        fn random(d: ScanDims, seed: u64) -> Self {
            let lens = d.input_shapes().map(|(_, len, _)| len);
            let mut x: [Vec<f32>; 8] =
                std::array::from_fn(|k| random_vec(lens[k], seed + k as u64, 1.0));
            let [_, delta_raw, delta_bias, a_log, ..] = &mut x;
            delta_raw.iter_mut().for_each(|v| *v = 1.5 * *v - 0.5);
            delta_bias.iter_mut().for_each(|v| *v *= 0.5);
            for (i, v) in a_log.iter_mut().enumerate() {
                *v = ((i % d.d_state) as f32 + 1.0).ln() + 0.2 * *v;
            }
            Inputs(x)
        }

        fn view(&self) -> ScanInputs<'_> {
            let [u, delta_raw, delta_bias, a_log, b, c, d_skip, z] = &self.0;
            ScanInputs {
                u,
                delta_raw,
                delta_bias,
                a_log,
                b,
                c,
                d_skip,
                z,
            }
        }

        /// Inputs of time steps t0..t1 (the per-channel parameters unchanged).
        fn time_slice(&self, d: ScanDims, t0: usize, t1: usize) -> Self {
            let mut sliced = self.clone();
            for (k, width) in [
                (U, d.d_inner),
                (DELTA_RAW, d.d_inner),
                (Z, d.d_inner),
                (B, d.d_state),
                (C, d.d_state),
            ] {
                sliced.0[k] = (0..d.batch)
                    .flat_map(|b| &self.0[k][(b * d.seq + t0) * width..(b * d.seq + t1) * width])
                    .copied()
                    .collect();
            }
            sliced
        }
    }

    fn forward(inp: &Inputs, d: ScanDims, state_in: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
        let mut out = vec![0.0; inp.0[U].len()];
        let mut state = vec![f32::NAN; d.state_len()];
        selective_scan_fwd(&mut out, &inp.view(), d, state_in, Some(&mut state));
        (out, state)
    }

    /// Adds the gradients of every input, in the same order, into `grads`.
    fn backward(grads: &mut [Vec<f32>; 8], dout: &[f32], inp: &Inputs, d: ScanDims) {
        let [du, ddelta_raw, ddelta_bias, da_log, db, dc, dd_skip, dz] = grads;
        let mut g = ScanGrads {
            du,
            ddelta_raw,
            ddelta_bias,
            da_log,
            db,
            dc,
            dd_skip,
            dz,
        };
        selective_scan_bwd(&mut g, dout, &inp.view(), d);
    }

    fn zeros_like(inp: &Inputs) -> [Vec<f32>; 8] {
        inp.0.clone().map(|x| vec![0.0; x.len()])
    }

    /// The scan in f64, straight from the definition, storing h for every (b, t, e, n).
    /// Returns the outputs and the final state.
    fn naive(inp: &Inputs, d: ScanDims, state_in: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
        let (bs, ts, es, ns) = (d.batch, d.seq, d.d_inner, d.d_state);
        let x = inp.view();
        let f = |v: f32| v as f64;
        let mut h = vec![0.0f64; bs * ts * es * ns];
        let mut out = vec![0.0f64; bs * ts * es];
        for b in 0..bs {
            for t in 0..ts {
                for e in 0..es {
                    let i = (b * ts + t) * es + e;
                    let raw = f(x.delta_raw[i]) + f(x.delta_bias[e]);
                    let delta = if raw > 20.0 { raw } else { raw.exp().ln_1p() };
                    let mut y = f(x.d_skip[e]) * f(x.u[i]);
                    for n in 0..ns {
                        let a = -f(x.a_log[e * ns + n]).exp();
                        let prev = match t {
                            0 => state_in.map_or(0.0, |s| f(s[(b * es + e) * ns + n])),
                            _ => h[(i - es) * ns + n],
                        };
                        let bn = f(x.b[(b * ts + t) * ns + n]);
                        h[i * ns + n] = (delta * a).exp() * prev + delta * f(x.u[i]) * bn;
                        y += h[i * ns + n] * f(x.c[(b * ts + t) * ns + n]);
                    }
                    let z = f(x.z[i]);
                    out[i] = y * z / (1.0 + (-z).exp());
                }
            }
        }
        let last = (0..bs)
            .flat_map(|b| &h[((b * ts + ts - 1) * es) * ns..][..es * ns])
            .copied()
            .collect();
        (out, last)
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (*g as f64 - w).abs();
            assert!(
                err <= tol * (1.0 + w.abs()),
                "{what}[{i}]: got {g}, want {w}"
            );
        }
    }

    const DIMS: ScanDims = ScanDims {
        batch: 2,
        seq: 9,
        d_inner: 6,
        d_state: 4,
    };

    #[test]
    fn fwd_matches_naive() {
        let d = DIMS;
        let mut inp = Inputs::random(d, 1);
        // a few deltas past softplus's threshold of 20, where delta = raw + bias exactly
        // (95 also overflows exp in f32: without the threshold delta would be inf)
        for (i, raw) in [(0, 20.5), (7, 23.0), (31, 21.0), (60, 95.0), (107, 30.0)] {
            inp.0[DELTA_RAW][i] = raw;
        }
        let st = random_vec(d.state_len(), 9, 1.0);
        for state_in in [None, Some(&st[..])] {
            let (out, state) = forward(&inp, d, state_in);
            let (out_ref, state_ref) = naive(&inp, d, state_in);
            assert_close(&out, &out_ref, 2e-5, "out");
            assert_close(&state, &state_ref, 2e-5, "state_out");
        }
    }

    #[test]
    fn bwd_matches_finite_differences() {
        let d = DIMS;
        let inp = Inputs::random(d, 11);
        let probe = random_vec(inp.0[U].len(), 19, 1.0);
        let mut grads = zeros_like(&inp);
        backward(&mut grads, &probe, &inp, d);
        for (k, (name, _, _)) in d.input_shapes().into_iter().enumerate() {
            let loss = |v: &[f32]| {
                let mut p = inp.clone();
                p.0[k] = v.to_vec();
                dot(&forward(&p, d, None).0, &probe)
            };
            check_gradient(name, &inp.0[k], &grads[k], loss, 200, 1e-3, 1e-2);
        }
        // gradients of a second call add to the first
        let mut twice = grads.clone();
        backward(&mut twice, &probe, &inp, d);
        for (two, one) in twice.iter().flatten().zip(grads.iter().flatten()) {
            assert!(
                (two - 2.0 * one).abs() <= 1e-6 * (1.0 + one.abs()),
                "bwd must add"
            );
        }
    }

    #[test]
    fn chunked_equals_one_pass() {
        let d = DIMS;
        let inp = Inputs::random(d, 21);
        let st0 = random_vec(d.state_len(), 29, 1.0);
        for initial in [None, Some(&st0[..])] {
            let (out_full, st_full) = forward(&inp, d, initial);
            let mut state = initial.map(<[f32]>::to_vec);
            let mut out_chunks = vec![Vec::new(); d.batch];
            let mut t0 = 0;
            for len in [4, 1, 4] {
                let dc = ScanDims { seq: len, ..d };
                let (out, next) = forward(&inp.time_slice(d, t0, t0 + len), dc, state.as_deref());
                for (b, chunk) in out.chunks_exact(len * d.d_inner).enumerate() {
                    out_chunks[b].extend_from_slice(chunk);
                }
                state = Some(next);
                t0 += len;
            }
            assert_eq!(t0, d.seq);
            // the same operations in the same order: equal bits, not just close
            assert_eq!(out_chunks.concat(), out_full, "chunked out");
            assert_eq!(state.unwrap(), st_full, "chunked state");
        }
    }

    #[test]
    fn results_independent_of_thread_count() {
        // 70 channels: three channel blocks per sequence, the last one partial
        let d = ScanDims {
            batch: 2,
            seq: 33,
            d_inner: 70,
            d_state: 16,
        };
        let inp = Inputs::random(d, 31);
        let dout = random_vec(inp.0[U].len(), 39, 1.0);
        let st = random_vec(d.state_len(), 38, 1.0);
        let run = || {
            let mut grads = zeros_like(&inp);
            backward(&mut grads, &dout, &inp, d);
            (forward(&inp, d, Some(&st)), grads)
        };
        let global = run();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert!(pool.install(run) == global, "{threads} threads");
        }
    }
}
