// Mamba-1's selective scan with the D skip and the SiLU(z) gate fused in, per batch b,
// channel e, state n:
//   delta[t,e] = softplus(delta_raw[t,e] + delta_bias[e])          (identity above 20)
//   A[e,n]     = -exp(a_log[e,n])
//   h[t,e,n]   = exp(delta[t,e] A[e,n]) h[t-1,e,n] + delta[t,e] u[t,e] B[t,n]   (h[-1] = state_in or 0)
//   y[t,e]     = sum_n h[t,e,n] C[t,n] + D[e] u[t,e]
//   out[t,e]   = y[t,e] * silu(z[t,e])
// Layout of the work: a lane (b, e) is d_state consecutive threads of one warp, thread n keeping
// h[n] in a register (f32) for the whole sequence; the sum over n is a shuffle within the lane's
// threads. d_state is a power of two <= 32 (the host checks), so lanes never straddle warps.
// u, delta_raw, z, out [batch, seq, d_inner] (T); b, c [batch, seq, d_state] (T);
// delta_bias, d_skip [d_inner] (T); a_log [d_inner, d_state] (T);
// state_in, state_out [batch, d_inner, d_state] (f32; either may be null).
template <typename T>
__device__ void selective_scan_fwd(T* out, float* state_out, const T* u, const T* delta_raw,
                                   const T* delta_bias, const T* a_log, const T* bmat, const T* cmat,
                                   const T* d_skip, const T* z, const float* state_in, int batch, int seq,
                                   int d_inner, int d_state) {
    const long gid = blockIdx.x * (long)blockDim.x + threadIdx.x;
    const long lane_id = gid / d_state;  // (b, e)
    const int n = (int)(gid % d_state);
    // Threads past the last lane still take part in the shuffles, on a dummy lane.
    const bool active = lane_id < (long)batch * d_inner;
    const int e = active ? (int)(lane_id % d_inner) : 0;
    const int b = active ? (int)(lane_id / d_inner) : 0;
    const float a = -expf(ld(a_log + (long)e * d_state + n));
    const float bias = ld(delta_bias + e), dsk = ld(d_skip + e);
    float h = (active && state_in) ? state_in[((long)b * d_inner + e) * d_state + n] : 0.0f;
    // Time in blocks of d_state steps: thread n of a lane first prepares step t0 + n (softplus,
    // delta * u, the gate silu(z): once per step, not once per state), then the recurrence runs
    // over the block, step j's values broadcast from thread j by shuffles.
    for (int t0 = 0; t0 < seq; t0 += d_state) {
        const int tn = t0 + n;
        float my_delta = 0.0f, my_du = 0.0f, my_u = 0.0f, my_gate = 0.0f;
        if (tn < seq) {
            const long i = ((long)b * seq + tn) * d_inner + e;
            my_delta = softplus(ld(delta_raw + i) + bias);
            my_u = ld(u + i);
            my_du = my_delta * my_u;
            my_gate = silu(ld(z + i));
        }
        const int steps = min(d_state, seq - t0);  // the same for every lane of a warp
        for (int j = 0; j < steps; ++j) {
            const float delta = __shfl_sync(0xffffffffu, my_delta, j, d_state);
            const float du = __shfl_sync(0xffffffffu, my_du, j, d_state);
            const long row = (long)b * seq + t0 + j;
            h = expf(delta * a) * h + du * ld(bmat + row * d_state + n);
            float y = h * ld(cmat + row * d_state + n);
            for (int o = d_state / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o, d_state);
            if (active && n == j) st(out + row * d_inner + e, (y + dsk * my_u) * my_gate);
        }
    }
    if (active && state_out) state_out[((long)b * d_inner + e) * d_state + n] = h;
}

#define SCAN_ARGS(T)                                                                                \
    T *out, float *state_out, const T *u, const T *delta_raw, const T *delta_bias, const T *a_log, \
        const T *bmat, const T *cmat, const T *d_skip, const T *z, const float *state_in, int batch, \
        int seq, int d_inner, int d_state
#define SCAN_CALL \
    selective_scan_fwd(out, state_out, u, delta_raw, delta_bias, a_log, bmat, cmat, d_skip, z, state_in, batch, seq, d_inner, d_state)

extern "C" __global__ void selective_scan_fwd_f32(SCAN_ARGS(float)) { SCAN_CALL; }
extern "C" __global__ void selective_scan_fwd_bf16(SCAN_ARGS(bf16_t)) { SCAN_CALL; }
