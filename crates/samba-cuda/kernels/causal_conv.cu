// Mamba's depthwise causal convolution fused with SiLU. One thread per (b, t, c):
//   p[b,t,c] = bias[c] + sum_{k=0..K-1} w[c,k] * x[b, t-(K-1)+k, c]
//   u[b,t,c] = silu(p[b,t,c])
// x [batch, seq, x_stride] (T; the first `channels` columns of each row are read: x_stride is
// 2E when x_in sits in the first half of Mamba's in_proj output [x_in | z]); u [batch, seq,
// channels] (T); w [channels, 1, K] (T); bias [channels] (T);
// state_in [batch, K-1, channels] (T, may be null = zeros): row K-1+s holds input time s < 0.
template <typename T>
__device__ void causal_conv1d_silu_fwd(T* u, const T* x, const T* w, const T* bias, const T* state_in,
                                       int batch, int seq, int channels, int kernel, int x_stride) {
    const long n = (long)batch * seq * channels;
    const int hist = kernel - 1;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const int c = (int)(i % channels);
        const long bt = i / channels;
        const int t = (int)(bt % seq);
        const int b = (int)(bt / seq);
        float p = ld(bias + c);
        for (int k = 0; k < kernel; ++k) {
            const int pos = t + k;  // position in [state; x]; input time pos - hist
            float xv;
            if (pos >= hist) xv = ld(x + ((long)b * seq + pos - hist) * x_stride + c);
            else if (state_in) xv = ld(state_in + ((long)b * hist + pos) * channels + c);
            else continue;
            p += ld(w + (long)c * kernel + k) * xv;
        }
        st(u + i, silu(p));
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
#define CONV_MAX_K 8
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

extern "C" __global__ void causal_conv1d_silu_fwd_f32(float* u, const float* x, const float* w, const float* bias,
                                                      const float* state_in, int batch, int seq, int channels,
                                                      int kernel, int x_stride) {
    causal_conv1d_silu_fwd(u, x, w, bias, state_in, batch, seq, channels, kernel, x_stride);
}
extern "C" __global__ void causal_conv1d_silu_fwd_bf16(bf16_t* u, const bf16_t* x, const bf16_t* w,
                                                       const bf16_t* bias, const bf16_t* state_in, int batch,
                                                       int seq, int channels, int kernel, int x_stride) {
    causal_conv1d_silu_fwd(u, x, w, bias, state_in, batch, seq, channels, kernel, x_stride);
}
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
