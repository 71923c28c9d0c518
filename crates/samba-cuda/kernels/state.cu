// The decode state's bookkeeping on the device (see src/model/state.rs).

// After a chunk of `seq` tokens of `batch` sequences went through attention, its keys and values
// go into the ring of each sequence: position p = pos0[b] + t is slot p % cap of
// k_cache, v_cache [batch, cap, kv_heads * head_dim]. Only the last min(seq, cap) tokens are
// written (earlier ones would be overwritten within the chunk anyway), so no two threads write
// one slot. qkv [batch, seq, (heads + 2 kv_heads) head_dim] (roped, grouped-interleaved).
template <typename T>
__device__ void kv_cache_write(T* k_cache, T* v_cache, const T* qkv, const int* pos0, int batch, int seq, int heads,
                               int kv_heads, int head_dim, int cap) {
    const int kv_dim = kv_heads * head_dim;
    const int q_per_kv = heads / kv_heads;
    const int group_dim = (q_per_kv + 2) * head_dim, qkv_dim = (heads + 2 * kv_heads) * head_dim;
    const int kept = min(seq, cap);
    const long n = (long)batch * kept * kv_dim;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const int c = (int)(i % kv_dim);
        const long bt = i / kv_dim;
        const int t = seq - kept + (int)(bt % kept);
        const int b = (int)(bt / kept);
        const int g = c / head_dim, d = c % head_dim;
        const T* row = qkv + ((long)b * seq + t) * qkv_dim + g * group_dim + q_per_kv * head_dim;
        const long slot = ((long)b * cap + (pos0[b] + t) % cap) * kv_dim + c;
        k_cache[slot] = row[d];
        v_cache[slot] = row[head_dim + d];
    }
}

// pos[b] += by for every sequence b: the positions of a decode state after a chunk of `by` tokens
// (kept on the device, so a captured decoding step advances them itself).
template <typename G>
__device__ void positions_advance_body(const G& g, int* pos, int batch, int by) {
    g.wait();
    const int b = g.block().x * g.threads() + g.thread();
    if (b < batch) pos[b] += by;
}
extern "C" __global__ void positions_advance(int* pos, int batch, int by) {
    positions_advance_body(KernelGrid{}, pos, batch, by);
}

extern "C" __global__ void kv_cache_write_f32(float* k_cache, float* v_cache, const float* qkv, const int* pos0,
                                              int batch, int seq, int heads, int kv_heads, int head_dim, int cap) {
    kv_cache_write(k_cache, v_cache, qkv, pos0, batch, seq, heads, kv_heads, head_dim, cap);
}
extern "C" __global__ void kv_cache_write_bf16(bf16_t* k_cache, bf16_t* v_cache, const bf16_t* qkv, const int* pos0,
                                               int batch, int seq, int heads, int kv_heads, int head_dim, int cap) {
    kv_cache_write(k_cache, v_cache, qkv, pos0, batch, seq, heads, kv_heads, head_dim, cap);
}
