// Mamba's depthwise causal convolution fused with SiLU. One thread per (b, t, c):
//   p[b,t,c] = bias[c] + sum_{k=0..K-1} w[c,k] * x[b, t-(K-1)+k, c]
//   u[b,t,c] = silu(p[b,t,c])
// x, u [batch, seq, channels] (T); w [channels, 1, K] (T); bias [channels] (T);
// state_in [batch, K-1, channels] (T, may be null = zeros): row K-1+s holds input time s < 0.
template <typename T>
__device__ void causal_conv1d_silu_fwd(T* u, const T* x, const T* w, const T* bias, const T* state_in,
                                       int batch, int seq, int channels, int kernel) {
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
            if (pos >= hist) xv = ld(x + ((long)b * seq + pos - hist) * channels + c);
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
                                        int channels, int kernel) {
    const int hist = kernel - 1;
    const long n = (long)batch * hist * channels;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const int c = (int)(i % channels);
        const long bj = i / channels;
        const int j = (int)(bj % hist);
        const int b = (int)(bj / hist);
        float v = 0.0f;
        if (seq + j >= hist) v = ld(x + ((long)b * seq + seq + j - hist) * channels + c);
        else if (state_in) v = ld(state_in + ((long)b * hist + seq + j) * channels + c);
        st(state_out + i, v);
    }
}

extern "C" __global__ void causal_conv1d_silu_fwd_f32(float* u, const float* x, const float* w, const float* bias,
                                                      const float* state_in, int batch, int seq, int channels,
                                                      int kernel) {
    causal_conv1d_silu_fwd(u, x, w, bias, state_in, batch, seq, channels, kernel);
}
extern "C" __global__ void causal_conv1d_silu_fwd_bf16(bf16_t* u, const bf16_t* x, const bf16_t* w,
                                                       const bf16_t* bias, const bf16_t* state_in, int batch,
                                                       int seq, int channels, int kernel) {
    causal_conv1d_silu_fwd(u, x, w, bias, state_in, batch, seq, channels, kernel);
}
extern "C" __global__ void causal_conv1d_state_fwd_f32(float* state_out, const float* x, const float* state_in,
                                                       int batch, int seq, int channels, int kernel) {
    causal_conv1d_state_fwd(state_out, x, state_in, batch, seq, channels, kernel);
}
extern "C" __global__ void causal_conv1d_state_fwd_bf16(bf16_t* state_out, const bf16_t* x,
                                                        const bf16_t* state_in, int batch, int seq,
                                                        int channels, int kernel) {
    causal_conv1d_state_fwd(state_out, x, state_in, batch, seq, channels, kernel);
}
