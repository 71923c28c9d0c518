// Rotary position embedding, GPT-NeoX half-split, in place on every q and k head of the fused
// qkv buffer (v is not rotated). For one head x = [x1 | x2] of token t (halves of head_dim),
// c = cos[t, i], s = sin[t, i] (tables [len, head_dim / 2], f32 holding bf16-rounded values):
//   out1[i] = x1[i] * c - x2[i] * s
//   out2[i] = x2[i] * c + x1[i] * s
// qkv [batch, seq, (heads + 2 kv_heads) head_dim] in the grouped-interleaved layout: the columns
// of a token are [kv_heads, heads / kv_heads + 2, head_dim] (per kv group: its query heads, k, v).
// One thread per (token, rotated head, i); rotated head j < heads is query head j, j >= heads is
// key head j - heads.
template <typename T>
__device__ void rope_fwd(T* qkv, const float* cos_t, const float* sin_t, long tokens, int seq,
                         int heads, int kv_heads, int head_dim) {
    const int half = head_dim / 2;
    const int rotated = heads + kv_heads;
    const int q_per_kv = heads / kv_heads;
    const int group_dim = (q_per_kv + 2) * head_dim;
    const int qkv_dim = (heads + 2 * kv_heads) * head_dim;
    const long n = tokens * rotated * half;
    for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < n; idx += (long)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const long rest = idx / half;
        const int j = (int)(rest % rotated);
        const long bt = rest / rotated;
        const int t = (int)(bt % seq);
        const int col = j < heads ? (j / q_per_kv) * group_dim + (j % q_per_kv) * head_dim
                                  : (j - heads) * group_dim + q_per_kv * head_dim;
        T* x = qkv + bt * qkv_dim + col;
        const float c = cos_t[(long)t * half + i], s = sin_t[(long)t * half + i];
        const float a = ld(x + i), b = ld(x + half + i);
        st(x + i, a * c - b * s);
        st(x + half + i, b * c + a * s);
    }
}

extern "C" __global__ void rope_fwd_f32(float* qkv, const float* cos_t, const float* sin_t, long tokens,
                                        int seq, int heads, int kv_heads, int head_dim) {
    rope_fwd(qkv, cos_t, sin_t, tokens, seq, heads, kv_heads, head_dim);
}
extern "C" __global__ void rope_fwd_bf16(bf16_t* qkv, const float* cos_t, const float* sin_t, long tokens,
                                         int seq, int heads, int kv_heads, int head_dim) {
    rope_fwd(qkv, cos_t, sin_t, tokens, seq, heads, kv_heads, head_dim);
}

// The same at positions read on the device: token t of sequence b is at absolute position
// pos0[b] + t (pos0 null: t), row p of tables that start at position 0 and cover every position
// used (the host checks). A captured decoding step rotates at the right positions without the
// host passing them.
template <typename T>
__device__ void rope_pos_fwd(T* qkv, const float* cos_t, const float* sin_t, const int* pos0, long tokens, int seq,
                             int heads, int kv_heads, int head_dim) {
    const int half = head_dim / 2;
    const int rotated = heads + kv_heads;
    const int q_per_kv = heads / kv_heads;
    const int group_dim = (q_per_kv + 2) * head_dim;
    const int qkv_dim = (heads + 2 * kv_heads) * head_dim;
    const long n = tokens * rotated * half;
    for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < n; idx += (long)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const long rest = idx / half;
        const int j = (int)(rest % rotated);
        const long bt = rest / rotated;
        const int t = (int)(bt % seq);
        const long b = bt / seq;
        const long p = (pos0 ? (long)pos0[b] : 0L) + t;
        const int col = j < heads ? (j / q_per_kv) * group_dim + (j % q_per_kv) * head_dim
                                  : (j - heads) * group_dim + q_per_kv * head_dim;
        T* x = qkv + bt * qkv_dim + col;
        const float c = cos_t[p * half + i], s = sin_t[p * half + i];
        const float a = ld(x + i), bb = ld(x + half + i);
        st(x + i, a * c - bb * s);
        st(x + half + i, bb * c + a * s);
    }
}

extern "C" __global__ void rope_pos_fwd_f32(float* qkv, const float* cos_t, const float* sin_t, const int* pos0,
                                            long tokens, int seq, int heads, int kv_heads, int head_dim) {
    rope_pos_fwd(qkv, cos_t, sin_t, pos0, tokens, seq, heads, kv_heads, head_dim);
}
extern "C" __global__ void rope_pos_fwd_bf16(bf16_t* qkv, const float* cos_t, const float* sin_t, const int* pos0,
                                             long tokens, int seq, int heads, int kv_heads, int head_dim) {
    rope_pos_fwd(qkv, cos_t, sin_t, pos0, tokens, seq, heads, kv_heads, head_dim);
}
