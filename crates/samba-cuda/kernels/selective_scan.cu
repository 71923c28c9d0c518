// Mamba-1's selective scan with the D skip and the SiLU(z) gate fused in, per batch b,
// channel e, state n:
//   delta[t,e] = softplus(delta_raw[t,e] + delta_bias[e])          (identity above 20)
//   A[e,n]     = -exp(a_log[e,n])
//   h[t,e,n]   = exp(delta[t,e] A[e,n]) h[t-1,e,n] + delta[t,e] u[t,e] B[t,n]   (h[-1] = state_in or 0)
//   y[t,e]     = sum_n h[t,e,n] C[t,n] + D[e] u[t,e]
//   out[t,e]   = y[t,e] * silu(z[t,e])
// Layout of the work: a block of SCAN_THREADS threads takes SCAN_THREADS / tpc channels e of one
// sequence b and one time split (below); each channel's N states are split over tpc consecutive
// threads (N / tpc states each, h in registers, f32), the sum over n a shuffle among them. tpc
// (a power of two <= N, chosen by the host) trades threads for per-thread work: 1 when there is
// parallel work enough, up to N for one short sequence.
// Time goes in chunks of SCAN_STEPS steps staged through shared memory: the block loads the
// chunk's delta (softplus applied), u and gate silu(z) for its channels and B, C for its
// sequence with coalesced reads, runs the recurrence reading only shared memory, and writes the
// chunk's outputs back coalesced. exp(delta A) is computed as 2^(delta A log2(e)), A scaled
// once per thread (the hardware's exp2 is one instruction; expf's range handling is several):
// the exponentials are most of the scan's work.
//
// Time splits (parallel over time, for few long sequences). The recurrence is linear in h, so
// a sequence cut into n_split pieces s of split_len steps (grid.z = s) can run its pieces at the
// same time:
//   1. local pass (out = null): each piece scans from h = 0, writing its end state
//      h_loc[b,s,e,n] to state_out and its sum of steps dsum[b,s,e] = sum_t delta[t,e], so that
//      the piece maps an entering state H to exp(A[e,n] dsum[b,s,e]) H + h_loc[b,s,e,n];
//   2. selective_scan_carry (below) walks the pieces in order and replaces each h_loc by the
//      state entering that piece;
//   3. output pass: each piece scans again from its entering state (state_in) and writes y.
// Without splits (n_split = 1, split_len = seq) one pass does everything, as before.
// u, delta_raw, out [batch, seq, d_inner] (T); z [batch, seq, z_stride] (T, the first d_inner
// columns; z_stride = 2E when z is the second half of in_proj's output [x_in | z]);
// b, c [batch, seq, bc_stride] (T, d_state columns each from their pointers: x_proj's output
// [dt_low | B | C] is read in place); delta_bias, d_skip [d_inner] (T); a_log [d_inner, d_state] (T);
// state_in, state_out [batch, n_split, d_inner, d_state] (f32; either may be null; they may be
// the same buffer: each thread reads its h before the piece and writes it after);
// dsum [batch, n_split, d_inner] (f32, may be null); out may be null (no y: the local pass).
#define SCAN_THREADS 128
#define SCAN_STEPS 16
#define LOG2E 1.4426950408889634f

// 2^x by the hardware's approximation (relative error ~2^-22); results below 2^-126 flush to
// zero, which a decay factor that small is anyway.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

template <typename T, int N>
__device__ void selective_scan_fwd(T* __restrict__ out, float* state_out, const T* __restrict__ u,
                                   const T* __restrict__ delta_raw, const T* __restrict__ delta_bias,
                                   const T* __restrict__ a_log, const T* __restrict__ bmat,
                                   const T* __restrict__ cmat, const T* __restrict__ d_skip,
                                   const T* __restrict__ z, const float* state_in, int batch, int seq,
                                   int d_inner, int z_stride, int bc_stride, int tpc, int split_len,
                                   float* __restrict__ dsum) {
    __shared__ float s_delta[SCAN_STEPS][SCAN_THREADS];
    __shared__ float s_u[SCAN_STEPS][SCAN_THREADS];
    // The gate of step s, then (tpc > 1: written by the channel's thread k = 0, the only one
    // that reads the gate) its output y.
    __shared__ float s_gate[SCAN_STEPS][SCAN_THREADS];
    __shared__ __align__(16) float s_b[SCAN_STEPS][N];
    __shared__ __align__(16) float s_c[SCAN_STEPS][N];
    const int tid = threadIdx.x;
    const int cpb = SCAN_THREADS / tpc;  // channels per block
    const int b = blockIdx.y;
    const int split = blockIdx.z, n_split = gridDim.z;
    const int t_begin = split * split_len, t_end = min(seq, t_begin + split_len);
    const long piece = (long)b * n_split + split;  // index of this (sequence, piece)'s state
    const int e0 = blockIdx.x * cpb;
    const int cl = tid / tpc, k = tid % tpc;
    const int e = e0 + cl;
    const bool active = e < d_inner;
    const bool want_y = out != nullptr;
    const int npt = N / tpc;  // states per thread: n = k * npt + i
    float h[N], a[N];
#pragma unroll
    for (int i = 0; i < N; ++i) {
        a[i] = 0.0f;
        h[i] = 0.0f;
        if (i < npt && active) {
            const int n = k * npt + i;
            a[i] = -expf(ld(a_log + (long)e * N + n)) * LOG2E;  // exp(delta A) = 2^(delta a)
            if (state_in) h[i] = state_in[(piece * d_inner + e) * N + n];
        }
    }
    const float dsk = active ? ld(d_skip + e) : 0.0f;
    float delta_total = 0.0f;
    for (int t0 = t_begin; t0 < t_end; t0 += SCAN_STEPS) {
        const int steps = min(SCAN_STEPS, t_end - t0);
        // Stage the chunk. With one thread per channel (the common case) each thread stages
        // its own channel's column, and no division by the runtime cpb is needed.
        for (int idx = tid; idx < SCAN_STEPS * cpb; idx += SCAN_THREADS) {
            const int s = tpc == 1 ? idx / SCAN_THREADS : idx / cpb;
            const int c = tpc == 1 ? tid : idx % cpb;
            const int ee = e0 + c;
            float dl = 0.0f, uu = 0.0f, gate = 0.0f;
            if (s < steps && ee < d_inner) {
                const long row = (long)b * seq + t0 + s;
                dl = softplus(ld(delta_raw + row * d_inner + ee) + ld(delta_bias + ee));
                uu = ld(u + row * d_inner + ee);
                if (want_y) gate = silu(ld(z + row * z_stride + ee));
            }
            s_delta[s][c] = dl;
            s_u[s][c] = uu;
            s_gate[s][c] = gate;
        }
        for (int idx = tid; idx < SCAN_STEPS * N; idx += SCAN_THREADS) {
            const int s = idx / N, n = idx % N;
            const long row = (long)b * seq + t0 + s;
            s_b[s][n] = s < steps ? ld(bmat + row * bc_stride + n) : 0.0f;
            s_c[s][n] = (s < steps && want_y) ? ld(cmat + row * bc_stride + n) : 0.0f;
        }
        __syncthreads();
        if (tpc == 1) {
            // Every state of the channel in this thread: constant indices, vector shared loads;
            // y goes straight out (a warp writes 32 consecutive channels of one row).
            for (int s = 0; s < steps; ++s) {
                const float dl = s_delta[s][tid], uu = s_u[s][tid];
                const float du = dl * uu;
                delta_total += dl;
                if (!want_y) {  // the local pass of time splits: h only
#pragma unroll
                    for (int n = 0; n < N; ++n) h[n] = fast_exp2(dl * a[n]) * h[n] + du * s_b[s][n];
                } else {
                    float y = 0.0f;
#pragma unroll
                    for (int n = 0; n < N; ++n) {
                        h[n] = fast_exp2(dl * a[n]) * h[n] + du * s_b[s][n];
                        y += h[n] * s_c[s][n];
                    }
                    if (active) st(out + ((long)b * seq + t0 + s) * d_inner + e, (y + dsk * uu) * s_gate[s][tid]);
                }
            }
            __syncthreads();  // the next chunk overwrites the staged values
            continue;
        }
        for (int s = 0; s < steps; ++s) {
            const float dl = s_delta[s][cl], uu = s_u[s][cl];
            const float du = dl * uu;
            delta_total += dl;
            float y = 0.0f;
#pragma unroll
            for (int i = 0; i < N; ++i) {
                if (i < npt) {
                    const int n = k * npt + i;
                    h[i] = fast_exp2(dl * a[i]) * h[i] + du * s_b[s][n];
                    y += h[i] * s_c[s][n];
                }
            }
            if (want_y) {
                for (int o = tpc / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
                if (k == 0) s_gate[s][cl] = (y + dsk * uu) * s_gate[s][cl];
            }
        }
        __syncthreads();
        if (want_y) {
            for (int idx = tid; idx < steps * cpb; idx += SCAN_THREADS) {
                const int s = idx / cpb, c = idx % cpb, ee = e0 + c;
                if (ee < d_inner) st(out + ((long)b * seq + t0 + s) * d_inner + ee, s_gate[s][c]);
            }
        }
        __syncthreads();  // the next chunk overwrites the staged values
    }
    if (active && state_out) {
#pragma unroll
        for (int i = 0; i < N; ++i)
            if (i < npt) state_out[(piece * d_inner + e) * N + k * npt + i] = h[i];
    }
    if (active && dsum && k == 0) dsum[piece * d_inner + e] = delta_total;
}

// Step 2 of the time splits: one thread per (b, e, n) walks the pieces of sequence b in order,
//   H_0 = state_in[b,e,n] (0 without it),   H_{s+1} = exp(A[e,n] dsum[b,s,e]) H_s + h_loc[b,s,e,n],
// replacing h_loc[b,s,e,n] by H_s (the state entering piece s) in place, and leaves the state
// after the last piece in state_out (either state may be null; they may be the same buffer).
// h_loc [batch, n_split, d_inner, d_state], dsum [batch, n_split, d_inner] (f32).
template <typename T>
__device__ void selective_scan_carry(float* h_loc, const float* __restrict__ dsum, const T* __restrict__ a_log,
                                     const float* state_in, float* state_out, int batch, int n_split,
                                     int d_inner, int d_state) {
    const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    const long lanes = (long)d_inner * d_state;
    if (i >= (long)batch * lanes) return;
    const long b = i / lanes, en = i % lanes;
    const long e = en / d_state;
    const float a = -expf(ld(a_log + en));
    float h = state_in ? state_in[i] : 0.0f;
    for (int s = 0; s < n_split; ++s) {
        const long piece = b * n_split + s;
        const long at = piece * lanes + en;
        const float local = h_loc[at];
        h_loc[at] = h;
        h = expf(a * dsum[piece * d_inner + e]) * h + local;
    }
    if (state_out) state_out[i] = h;
}

// The same scan for few long sequences, where the chunked kernel above would have only a few
// channels per block and walk the chunks one after the other: a lane (b, e) is N consecutive
// threads of one warp, thread n keeping h[n] in a register for the whole sequence, the sum over
// n a shuffle among them. Time goes in blocks of N steps: thread n first prepares step t0 + n
// (softplus, delta u, the gate: once per step) and loads B[t0 + j, n], C[t0 + j, n] of every step
// j of the block into registers; the recurrence then runs over the block reading no memory, step
// j's values broadcast from thread j, and thread j keeps y of step j, stored after the block.
template <typename T, int N>
__device__ void selective_scan_lanes_fwd(T* __restrict__ out, float* state_out, const T* __restrict__ u,
                                         const T* __restrict__ delta_raw, const T* __restrict__ delta_bias,
                                         const T* __restrict__ a_log, const T* __restrict__ bmat,
                                         const T* __restrict__ cmat, const T* __restrict__ d_skip,
                                         const T* __restrict__ z, const float* state_in, int batch, int seq,
                                         int d_inner, int z_stride, int bc_stride) {
    const long gid = blockIdx.x * (long)blockDim.x + threadIdx.x;
    const long lane_id = gid / N;  // (b, e)
    const int n = (int)(gid % N);
    // Threads past the last lane still take part in the shuffles, on a dummy lane.
    const bool active = lane_id < (long)batch * d_inner;
    const int e = active ? (int)(lane_id % d_inner) : 0;
    const int b = active ? (int)(lane_id / d_inner) : 0;
    const float a = -expf(ld(a_log + (long)e * N + n));
    const float bias = ld(delta_bias + e), dsk = ld(d_skip + e);
    float h = (active && state_in) ? state_in[((long)b * d_inner + e) * N + n] : 0.0f;
    for (int t0 = 0; t0 < seq; t0 += N) {
        const int tn = t0 + n;
        const int steps = min(N, seq - t0);  // the same for every lane of a warp
        float my_delta = 0.0f, my_du = 0.0f, my_u = 0.0f, my_gate = 0.0f;
        if (tn < seq) {
            const long i = ((long)b * seq + tn) * d_inner + e;
            my_delta = softplus(ld(delta_raw + i) + bias);
            my_u = ld(u + i);
            my_du = my_delta * my_u;
            my_gate = silu(ld(z + ((long)b * seq + tn) * z_stride + e));
        }
        float bj[N], cj[N];
#pragma unroll
        for (int j = 0; j < N; ++j) {
            const long row = (long)b * seq + t0 + j;
            bj[j] = j < steps ? ld(bmat + row * bc_stride + n) : 0.0f;
            cj[j] = j < steps ? ld(cmat + row * bc_stride + n) : 0.0f;
        }
        float my_y = 0.0f;
#pragma unroll
        for (int j = 0; j < N; ++j) {
            if (j < steps) {
                const float delta = __shfl_sync(0xffffffffu, my_delta, j, N);
                const float du = __shfl_sync(0xffffffffu, my_du, j, N);
                h = expf(delta * a) * h + du * bj[j];
                float y = h * cj[j];
#pragma unroll
                for (int o = N / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o, N);
                if (n == j) my_y = y;
            }
        }
        if (active && tn < seq) st(out + ((long)b * seq + tn) * d_inner + e, (my_y + dsk * my_u) * my_gate);
    }
    if (active && state_out) state_out[((long)b * d_inner + e) * N + n] = h;
}

#define SCAN_ARGS(T)                                                                                \
    T *out, float *state_out, const T *u, const T *delta_raw, const T *delta_bias, const T *a_log, \
        const T *bmat, const T *cmat, const T *d_skip, const T *z, const float *state_in, int batch, \
        int seq, int d_inner, int z_stride, int bc_stride, int tpc, int split_len, float *dsum
#define SCAN_CALL(T, N)                                                                               \
    selective_scan_fwd<T, N>(out, state_out, u, delta_raw, delta_bias, a_log, bmat, cmat, d_skip, z, \
                             state_in, batch, seq, d_inner, z_stride, bc_stride, tpc, split_len, dsum)
// One entry point per storage type and d_state. The launch bounds hold the registers to what
// lets 6 blocks share a multiprocessor (their shared memory fits too): more warps to hide the
// shared-memory and exp latencies behind.
#define SCAN_BOUNDS __launch_bounds__(SCAN_THREADS, 6)
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_f32_n1(SCAN_ARGS(float)) { SCAN_CALL(float, 1); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_f32_n2(SCAN_ARGS(float)) { SCAN_CALL(float, 2); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_f32_n4(SCAN_ARGS(float)) { SCAN_CALL(float, 4); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_f32_n8(SCAN_ARGS(float)) { SCAN_CALL(float, 8); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_f32_n16(SCAN_ARGS(float)) { SCAN_CALL(float, 16); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_f32_n32(SCAN_ARGS(float)) { SCAN_CALL(float, 32); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_bf16_n1(SCAN_ARGS(bf16_t)) { SCAN_CALL(bf16_t, 1); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_bf16_n2(SCAN_ARGS(bf16_t)) { SCAN_CALL(bf16_t, 2); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_bf16_n4(SCAN_ARGS(bf16_t)) { SCAN_CALL(bf16_t, 4); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_bf16_n8(SCAN_ARGS(bf16_t)) { SCAN_CALL(bf16_t, 8); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_bf16_n16(SCAN_ARGS(bf16_t)) { SCAN_CALL(bf16_t, 16); }
extern "C" __global__ void SCAN_BOUNDS selective_scan_fwd_bf16_n32(SCAN_ARGS(bf16_t)) { SCAN_CALL(bf16_t, 32); }
#define LANES_ARGS(T)                                                                               \
    T *out, float *state_out, const T *u, const T *delta_raw, const T *delta_bias, const T *a_log, \
        const T *bmat, const T *cmat, const T *d_skip, const T *z, const float *state_in, int batch, \
        int seq, int d_inner, int z_stride, int bc_stride
#define LANES_CALL(T, N)                                                                                    \
    selective_scan_lanes_fwd<T, N>(out, state_out, u, delta_raw, delta_bias, a_log, bmat, cmat, d_skip, z, \
                                   state_in, batch, seq, d_inner, z_stride, bc_stride)
extern "C" __global__ void selective_scan_lanes_fwd_f32_n1(LANES_ARGS(float)) { LANES_CALL(float, 1); }
extern "C" __global__ void selective_scan_lanes_fwd_f32_n2(LANES_ARGS(float)) { LANES_CALL(float, 2); }
extern "C" __global__ void selective_scan_lanes_fwd_f32_n4(LANES_ARGS(float)) { LANES_CALL(float, 4); }
extern "C" __global__ void selective_scan_lanes_fwd_f32_n8(LANES_ARGS(float)) { LANES_CALL(float, 8); }
extern "C" __global__ void selective_scan_lanes_fwd_f32_n16(LANES_ARGS(float)) { LANES_CALL(float, 16); }
extern "C" __global__ void selective_scan_lanes_fwd_f32_n32(LANES_ARGS(float)) { LANES_CALL(float, 32); }
extern "C" __global__ void selective_scan_lanes_fwd_bf16_n1(LANES_ARGS(bf16_t)) { LANES_CALL(bf16_t, 1); }
extern "C" __global__ void selective_scan_lanes_fwd_bf16_n2(LANES_ARGS(bf16_t)) { LANES_CALL(bf16_t, 2); }
extern "C" __global__ void selective_scan_lanes_fwd_bf16_n4(LANES_ARGS(bf16_t)) { LANES_CALL(bf16_t, 4); }
extern "C" __global__ void selective_scan_lanes_fwd_bf16_n8(LANES_ARGS(bf16_t)) { LANES_CALL(bf16_t, 8); }
extern "C" __global__ void selective_scan_lanes_fwd_bf16_n16(LANES_ARGS(bf16_t)) { LANES_CALL(bf16_t, 16); }
extern "C" __global__ void selective_scan_lanes_fwd_bf16_n32(LANES_ARGS(bf16_t)) { LANES_CALL(bf16_t, 32); }
#define CARRY_ARGS(T)                                                                            \
    float *h_loc, const float *dsum, const T *a_log, const float *state_in, float *state_out, int batch, \
        int n_split, int d_inner, int d_state
extern "C" __global__ void selective_scan_carry_f32(CARRY_ARGS(float)) {
    selective_scan_carry<float>(h_loc, dsum, a_log, state_in, state_out, batch, n_split, d_inner, d_state);
}
extern "C" __global__ void selective_scan_carry_bf16(CARRY_ARGS(bf16_t)) {
    selective_scan_carry<bf16_t>(h_loc, dsum, a_log, state_in, state_out, batch, n_split, d_inner, d_state);
}
