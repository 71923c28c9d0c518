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

template <typename T, typename G>
__device__ void mamba_scan_step_fwd(const G& g, T* y, float* h, const T* x_dbl, const T* u, const T* z, int z_stride,
                                    const T* dt_w, const T* dt_b, const T* a_log, const T* d_skip, int d_inner,
                                    int d_state, int dt_rank) {
    const int N = d_state;
    const long t = g.block().x * (long)g.threads() + g.thread();
    const int e = (int)(t / N), n = (int)(t % N);
    const int b = g.block().y;
    const bool active = e < d_inner;  // inactive lanes still take part in the shuffles
    const int xdim = dt_rank + 2 * N;

    float wdt[SCAN_STEP_RPL];
    float a = 0.0f, dsk = 0.0f, bias = 0.0f;
#pragma unroll
    for (int j = 0; j < SCAN_STEP_RPL; ++j) {
        const int k = n + N * j;
        wdt[j] = active && k < dt_rank ? ld(dt_w + (long)e * dt_rank + k) : 0.0f;
    }
    if (active) {
        a = -expf(ld(a_log + (long)e * N + n));
        dsk = ld(d_skip + e);
        bias = ld(dt_b + e);
    }
    g.wait();

    // Every load of the step issued before the first is used.
    const T* xr = x_dbl + (long)b * xdim;
    float xk[SCAN_STEP_RPL];
#pragma unroll
    for (int j = 0; j < SCAN_STEP_RPL; ++j) {
        const int k = n + N * j;
        xk[j] = active && k < dt_rank ? ld(xr + k) : 0.0f;
    }
    float uu = 0.0f, bn = 0.0f, cn = 0.0f, zz = 0.0f, h0 = 0.0f;
    float* hp = h + ((long)b * d_inner + e) * N + n;
    if (active) {
        uu = ld(u + (long)b * d_inner + e);
        bn = ld(xr + dt_rank + n);
        cn = ld(xr + dt_rank + N + n);
        zz = ld(z + (long)b * z_stride + e);
        h0 = *hp;
    }
    float dot = 0.0f;
#pragma unroll
    for (int j = 0; j < SCAN_STEP_RPL; ++j) dot += wdt[j] * xk[j];
    if (active)
        for (int k = n + N * SCAN_STEP_RPL; k < dt_rank; k += N) dot += ld(dt_w + (long)e * dt_rank + k) * ld(xr + k);
    for (int o = N / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float delta = softplus(stored<T>(dot) + bias);

    float part = 0.0f;
    if (active) {
        const float hv = expf(delta * a) * h0 + (delta * uu) * bn;
        *hp = hv;
        part = hv * cn;
    }
    for (int o = N / 2; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
    if (active && n == 0) st(y + (long)b * d_inner + e, (part + dsk * uu) * silu(zz));
}

#define SCAN_STEP_ARGS(T)                                                                                   \
    T *y, float *h, const T *x_dbl, const T *u, const T *z, int z_stride, const T *dt_w, const T *dt_b,     \
        const T *a_log, const T *d_skip, int d_inner, int d_state, int dt_rank
extern "C" __global__ void __launch_bounds__(128) mamba_scan_step_fwd_f32(SCAN_STEP_ARGS(float)) {
    mamba_scan_step_fwd(KernelGrid{}, y, h, x_dbl, u, z, z_stride, dt_w, dt_b, a_log, d_skip, d_inner, d_state, dt_rank);
}
extern "C" __global__ void __launch_bounds__(128) mamba_scan_step_fwd_bf16(SCAN_STEP_ARGS(bf16_t)) {
    mamba_scan_step_fwd(KernelGrid{}, y, h, x_dbl, u, z, z_stride, dt_w, dt_b, a_log, d_skip, d_inner, d_state, dt_rank);
}
