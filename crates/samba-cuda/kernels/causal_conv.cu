// Mamba's depthwise causal convolution fused with SiLU:
//   p[b,t,c] = bias[c] + sum_{k=0..K-1} w[c,k] * x[b, t-(K-1)+k, c]
//   u[b,t,c] = silu(p[b,t,c])
// x [batch, seq, x_stride] (T; the first `channels` columns of each row are read: x_stride is
// 2E when x_in sits in the first half of Mamba's in_proj output [x_in | z]); u [batch, seq,
// channels] (T); w [channels, 1, K] (T); bias [channels] (T);
// state_in [batch, K-1, channels] (T, may be null = zeros): row K-1+s holds input time s < 0.
// One thread per (b, c, tile of CONV_TILE steps): grid (channel blocks, tiles, batch). The
// thread keeps the last K-1 inputs and the K weights in registers and walks its tile, so each
// input is read once per tile (plus K-1 rows of history), a warp's reads and writes are one
// row's consecutive channels, and no index needs a division. The loads of CONV_BURST rows are
// issued before any is used, so a thread waits on memory once per burst rather than per row. K <= CONV_MAX_K (the host checks).
#define CONV_MAX_K 8
#define CONV_TILE 64
#define CONV_BURST 8
// K is the kernel width when known at compile time (Samba's 4: the taps unroll into plain
// FMAs and the history shifts into register renames), or 0 for any width up to CONV_MAX_K
// given at run time.
template <typename T, int K>
__device__ void causal_conv1d_silu_fwd(T* u, const T* x, const T* w, const T* bias, const T* state_in,
                                       int batch, int seq, int channels, int kernel, int x_stride) {
    constexpr int KM = K > 0 ? K : CONV_MAX_K;  // registers for the taps
    if (K > 0) kernel = K;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int t0 = blockIdx.y * CONV_TILE;
    const long b = blockIdx.z;
    if (c >= channels || t0 >= seq) return;
    const int hist_len = kernel - 1;
    float wk[KM], hist[KM];  // hist[k]: the input at time t - (K-1) + k
#pragma unroll
    for (int k = 0; k < KM; ++k) {
        wk[k] = k < kernel ? ld(w + (long)c * kernel + k) : 0.0f;
        hist[k] = 0.0f;
        if (k < hist_len) {
            const int time = t0 - hist_len + k;
            if (time >= 0) hist[k] = ld(x + (b * seq + time) * x_stride + c);
            else if (state_in) hist[k] = ld(state_in + (b * hist_len + hist_len + time) * channels + c);
        }
    }
    const float bias_c = ld(bias + c);
    const int t_end = min(seq, t0 + CONV_TILE);
    // CONV_BURST rows at a time: their loads are issued together, then used in order.
    for (int tb = t0; tb < t_end; tb += CONV_BURST) {
        float xs[CONV_BURST];
#pragma unroll
        for (int j = 0; j < CONV_BURST; ++j)
            xs[j] = tb + j < t_end ? ld(x + (b * seq + tb + j) * x_stride + c) : 0.0f;
#pragma unroll
        for (int j = 0; j < CONV_BURST; ++j) {
            if (tb + j >= t_end) break;
            const float xv = xs[j];
            float p = bias_c;
#pragma unroll
            for (int k = 0; k < KM; ++k) {
                if (k < hist_len) p += wk[k] * hist[k];
                else if (k == hist_len) p += wk[k] * xv;
            }
            st(u + (b * seq + tb + j) * channels + c, silu(p));
#pragma unroll
            for (int k = 0; k < KM - 1; ++k) {
                if (k + 1 < hist_len) hist[k] = hist[k + 1];
                else if (k + 1 == hist_len) hist[k] = xv;
            }
        }
    }
}

// The conv state after the sequence: the last K-1 input rows, oldest first. One thread per
// (b, j, c): row j of the new state is input time seq - (K-1) + j, taken from x when that time
// is >= 0, else from state_in (zeros without it), so chunks with the state carried equal one pass.
// state_out [batch, K-1, channels]; must not alias state_in.
template <typename T>
__device__ void causal_conv1d_state_fwd(T* state_out, const T* x, const T* state_in, int batch, int seq,
                                        int channels, int kernel, int x_stride) {
    const int hist = kernel - 1;
    const long n = (long)batch * hist * channels;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const int c = (int)(i % channels);
        const long bj = i / channels;
        const int j = (int)(bj % hist);
        const int b = (int)(bj / hist);
        float v = 0.0f;
        if (seq + j >= hist) v = ld(x + ((long)b * seq + seq + j - hist) * x_stride + c);
        else if (state_in) v = ld(state_in + ((long)b * hist + seq + j) * channels + c);
        st(state_out + i, v);
    }
}

// The conv over a short chunk (decoding: one token) with the state updated in place. One thread
// per (b, c) walks the chunk's steps in order with the last K-1 inputs in registers:
//   u[b,t,c] = silu(bias[c] + sum_{k<K-1} w[c,k] hist[k] + w[c,K-1] x[b,t,c]),  then hist shifts by x[b,t,c]
// hist starts as state[b, :, c] and is written back there after the chunk (the same K-1 rows as
// causal_conv1d_state_fwd gives). state [batch, K-1, channels] (T); K <= CONV_MAX_K (the host checks).
template <typename T>
__device__ void causal_conv1d_update_fwd(T* u, T* state, const T* x, const T* w, const T* bias, int batch,
                                         int seq, int channels, int kernel, int x_stride) {
    const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= (long)batch * channels) return;
    const int c = (int)(i % channels);
    const int b = (int)(i / channels);
    const int hist_len = kernel - 1;
    float wk[CONV_MAX_K], hist[CONV_MAX_K];
#pragma unroll
    for (int k = 0; k < CONV_MAX_K; ++k) {
        wk[k] = k < kernel ? ld(w + (long)c * kernel + k) : 0.0f;
        hist[k] = k < hist_len ? ld(state + ((long)b * hist_len + k) * channels + c) : 0.0f;
    }
    const float bias_c = ld(bias + c);
    for (int t = 0; t < seq; ++t) {
        const long row = (long)b * seq + t;
        const float xv = ld(x + row * x_stride + c);
        float p = bias_c;
#pragma unroll
        for (int k = 0; k < CONV_MAX_K; ++k) {
            if (k < hist_len) p += wk[k] * hist[k];
            else if (k == hist_len) p += wk[k] * xv;
        }
        st(u + row * channels + c, silu(p));
#pragma unroll
        for (int k = 0; k < CONV_MAX_K - 1; ++k) {
            if (k + 1 < hist_len) hist[k] = hist[k + 1];
            else if (k + 1 == hist_len) hist[k] = xv;
        }
    }
#pragma unroll
    for (int k = 0; k < CONV_MAX_K; ++k)
        if (k < hist_len) st(state + ((long)b * hist_len + k) * channels + c, hist[k]);
}

#define CONV_ARGS(T) \
    T *u, const T *x, const T *w, const T *bias, const T *state_in, int batch, int seq, int channels, int kernel, \
        int x_stride
#define CONV_CALL(T, K) \
    causal_conv1d_silu_fwd<T, K>(u, x, w, bias, state_in, batch, seq, channels, kernel, x_stride)
extern "C" __global__ void causal_conv1d_silu_fwd_f32(CONV_ARGS(float)) { CONV_CALL(float, 0); }
extern "C" __global__ void causal_conv1d_silu_fwd_bf16(CONV_ARGS(bf16_t)) { CONV_CALL(bf16_t, 0); }
extern "C" __global__ void causal_conv1d_silu_fwd_k4_f32(CONV_ARGS(float)) { CONV_CALL(float, 4); }
extern "C" __global__ void causal_conv1d_silu_fwd_k4_bf16(CONV_ARGS(bf16_t)) { CONV_CALL(bf16_t, 4); }
extern "C" __global__ void causal_conv1d_state_fwd_f32(float* state_out, const float* x, const float* state_in,
                                                       int batch, int seq, int channels, int kernel, int x_stride) {
    causal_conv1d_state_fwd(state_out, x, state_in, batch, seq, channels, kernel, x_stride);
}
extern "C" __global__ void causal_conv1d_state_fwd_bf16(bf16_t* state_out, const bf16_t* x,
                                                        const bf16_t* state_in, int batch, int seq,
                                                        int channels, int kernel, int x_stride) {
    causal_conv1d_state_fwd(state_out, x, state_in, batch, seq, channels, kernel, x_stride);
}
extern "C" __global__ void causal_conv1d_update_fwd_f32(float* u, float* state, const float* x, const float* w,
                                                        const float* bias, int batch, int seq, int channels,
                                                        int kernel, int x_stride) {
    causal_conv1d_update_fwd(u, state, x, w, bias, batch, seq, channels, kernel, x_stride);
}
extern "C" __global__ void causal_conv1d_update_fwd_bf16(bf16_t* u, bf16_t* state, const bf16_t* x,
                                                         const bf16_t* w, const bf16_t* bias, int batch, int seq,
                                                         int channels, int kernel, int x_stride) {
    causal_conv1d_update_fwd(u, state, x, w, bias, batch, seq, channels, kernel, x_stride);
}
