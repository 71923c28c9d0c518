// The selective-scan step of Mamba-1 for one token per sequence (a decoding step), with dt_proj
// and the softplus fused in front of it. Per sequence b, channel e, state n:
//   delta_raw[b,e] = sum_k dt_low[b,k] dt_w[e,k]          (rounded to T, as dt_proj's output is
//                                                           stored on the unfused path)
//   delta          = softplus(delta_raw[b,e] + dt_b[e])    (identity above 20)
//   A[e,n]         = -exp(a_log[e,n])
//   h[b,e,n]       = exp(delta A[e,n]) h[b,e,n] + delta u[b,e] B[b,n]
//   y[b,e]         = (sum_n h[b,e,n] C[b,n] + D[e] u[b,e]) * silu(z[b,e])
// x_dbl [batch, R + 2N] = [dt_low | B | C] (x_proj's output, T); u [batch, E] (T); z [batch,
// z_stride] (T: the second half of in_proj's [x_in | z]); dt_w [E, R], dt_b [E], a_log [E, N],
// d_skip [E] (T); h [batch, E, N] (f32, updated in place); y [batch, E] (T).
//
// Lanes: N consecutive lanes per channel (N a power of two <= 32, checked by the host), lane n
// holding h[b,e,n]; the dot over R and the sum over n are shuffles among those N lanes. The
// weights (dt_w's row, A, D, the bias) are read before g.wait() (with programmatic dependent
// launch, or in the persistent step: while the work before finishes).
#define SCAN_STEP_RPL 12

// The step's arguments, in the kernel entry's order.
template <typename T>
struct ScanStepArgs {
    T* y;
    float* h;
    const T *x_dbl, *u, *z;
    int z_stride;
    const T *dt_w, *dt_b, *a_log, *d_skip;
    int d_inner, d_state, dt_rank;
};

// One thread's (b, e, n), its loads in three groups by what they wait for, then the step:
//   weights       dt_w's row, A, D, the bias: nothing (before the wait)
//   state_inputs  h, u, z: the scan state and in_proj's outputs (after the wait: in_proj may
//                 be the op right before, as in the persistent step with x_proj folded into it)
//   token_inputs  x_dbl: x_proj's output (after the wait)
// Every load of a group is issued before the first is used.
template <typename T>
struct ScanStepItem {
    int e, n, b;
    bool active;  // inactive lanes still take part in the shuffles
    float wdt[SCAN_STEP_RPL], xk[SCAN_STEP_RPL];
    float a, dsk, bias, uu, zz, h0, bn, cn;

    // thread t of the threads of sequence b (N consecutive ones per channel)
    __device__ void weights(const ScanStepArgs<T>& p, long t, int b_) {
        const int N = p.d_state;
        e = (int)(t / N), n = (int)(t % N), b = b_;
        active = e < p.d_inner;
#pragma unroll
        for (int j = 0; j < SCAN_STEP_RPL; ++j) {
            const int k = n + N * j;
            wdt[j] = active && k < p.dt_rank ? ld(p.dt_w + (long)e * p.dt_rank + k) : 0.0f;
        }
        a = dsk = bias = 0.0f;
        if (active) {
            a = -expf(ld(p.a_log + (long)e * N + n));
            dsk = ld(p.d_skip + e);
            bias = ld(p.dt_b + e);
        }
    }
    __device__ float* state(const ScanStepArgs<T>& p) const {
        return p.h + ((long)b * p.d_inner + e) * p.d_state + n;
    }
    __device__ void state_inputs(const ScanStepArgs<T>& p) {
        uu = zz = h0 = 0.0f;
        if (active) {
            uu = ld(p.u + (long)b * p.d_inner + e);
            zz = ld(p.z + (long)b * p.z_stride + e);
            h0 = *state(p);
        }
    }
    __device__ const T* x_row(const ScanStepArgs<T>& p) const { return p.x_dbl + (long)b * (p.dt_rank + 2 * p.d_state); }
    __device__ void token_inputs(const ScanStepArgs<T>& p) {
        const T* xr = x_row(p);
#pragma unroll
        for (int j = 0; j < SCAN_STEP_RPL; ++j) {
            const int k = n + p.d_state * j;
            xk[j] = active && k < p.dt_rank ? ld(xr + k) : 0.0f;
        }
        bn = cn = 0.0f;
        if (active) {
            bn = ld(xr + p.dt_rank + n);
            cn = ld(xr + p.dt_rank + p.d_state + n);
        }
    }
    __device__ void finish(const ScanStepArgs<T>& p) {
        const int N = p.d_state;
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < SCAN_STEP_RPL; ++j) dot += wdt[j] * xk[j];
        if (active)
            for (int k = n + N * SCAN_STEP_RPL; k < p.dt_rank; k += N)
                dot += ld(p.dt_w + (long)e * p.dt_rank + k) * ld(x_row(p) + k);
        for (int o = N / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        const float delta = softplus(stored<T>(dot) + bias);

        float part = 0.0f;
        if (active) {
            const float hv = expf(delta * a) * h0 + (delta * uu) * bn;
            *state(p) = hv;
            part = hv * cn;
        }
        for (int o = N / 2; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
        if (active && n == 0) st(p.y + (long)b * p.d_inner + e, (part + dsk * uu) * silu(zz));
    }
};

__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Requests into L2 the bytes of thread t of sequence b besides x_proj's output (the weights, the
// state, u and z): the 32-byte sectors of its channel's rows, one per thread. (A prefetch of u and
// z that races in_proj's writes only costs a wasted request: the loads come after the wait.)
template <typename T>
__device__ void scan_step_prefetch_l2(const ScanStepArgs<T>& p, long t, int b) {
    const int N = p.d_state, e = (int)(t / N), n = (int)(t % N);
    if (e >= p.d_inner) return;
    const char* dt_row = reinterpret_cast<const char*>(p.dt_w + (long)e * p.dt_rank);
    if (32 * n < p.dt_rank * (int)sizeof(T)) prefetch_l2(dt_row + 32 * n);
    const char* h_row = reinterpret_cast<const char*>(p.h + ((long)b * p.d_inner + e) * N);
    if (32 * n < N * 4) prefetch_l2(h_row + 32 * n);
    const char* a_row = reinterpret_cast<const char*>(p.a_log + (long)e * N);
    if (32 * n < N * (int)sizeof(T)) prefetch_l2(a_row + 32 * n);
    if (n == 0) {
        prefetch_l2(p.u + (long)b * p.d_inner + e);
        prefetch_l2(p.z + (long)b * p.z_stride + e);
        prefetch_l2(p.d_skip + e);
        prefetch_l2(p.dt_b + e);
    }
}

template <typename T, typename G>
__device__ void mamba_scan_step_fwd(const G& g, const ScanStepArgs<T>& p) {
    ScanStepItem<T> it;
    it.weights(p, g.block().x * (long)g.threads() + g.thread(), g.block().y);
    g.wait();
    it.state_inputs(p);
    it.token_inputs(p);
    it.finish(p);
}

#define SCAN_STEP_ARGS(T)                                                                                   \
    T *y, float *h, const T *x_dbl, const T *u, const T *z, int z_stride, const T *dt_w, const T *dt_b,     \
        const T *a_log, const T *d_skip, int d_inner, int d_state, int dt_rank
extern "C" __global__ void __launch_bounds__(128) mamba_scan_step_fwd_f32(SCAN_STEP_ARGS(float)) {
    mamba_scan_step_fwd(KernelGrid{},
                        ScanStepArgs<float>{y, h, x_dbl, u, z, z_stride, dt_w, dt_b, a_log, d_skip, d_inner, d_state, dt_rank});
}
extern "C" __global__ void __launch_bounds__(128) mamba_scan_step_fwd_bf16(SCAN_STEP_ARGS(bf16_t)) {
    mamba_scan_step_fwd(KernelGrid{}, ScanStepArgs<bf16_t>{y, h, x_dbl, u, z, z_stride, dt_w, dt_b, a_log, d_skip,
                                                           d_inner, d_state, dt_rank});
}
