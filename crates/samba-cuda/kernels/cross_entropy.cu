// Softmax cross-entropy of next-token targets, one block per row of logits [rows, vocab]:
//   lse[m]  = max_v l[m,v] + ln sum_v exp(l[m,v] - max)      (log-sum-exp; log p(v) = l[m,v] - lse[m])
//   loss[m] = lse[m] - l[m, target[m]]
// loss, lse [rows] f32; targets [rows] u32 (checked by the caller; one outside the vocabulary
// gives a NaN loss).
template <typename T>
__device__ void cross_entropy_fwd(float* loss, float* lse, const T* logits, const u32* targets, int vocab) {
    __shared__ float scratch[32];
    const long row = blockIdx.x;
    const T* l = logits + row * vocab;
    float m = -INFINITY;
    for (int v = threadIdx.x; v < vocab; v += blockDim.x) m = fmaxf(m, ld(l + v));
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int v = threadIdx.x; v < vocab; v += blockDim.x) s += expf(ld(l + v) - m);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        const float z = m + logf(s);
        const u32 t = targets[row];
        lse[row] = z;
        loss[row] = t < (u32)vocab ? z - ld(l + t) : SAMBA_NAN;
    }
}

extern "C" __global__ void cross_entropy_fwd_f32(float* loss, float* lse, const float* logits,
                                                 const u32* targets, int vocab) {
    cross_entropy_fwd(loss, lse, logits, targets, vocab);
}
extern "C" __global__ void cross_entropy_fwd_bf16(float* loss, float* lse, const bf16_t* logits,
                                                  const u32* targets, int vocab) {
    cross_entropy_fwd(loss, lse, logits, targets, vocab);
}
