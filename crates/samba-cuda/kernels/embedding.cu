// Token embedding lookup, no scaling:
//   out[m, :] = wte[tokens[m], :]
// out [rows, dim]; wte [vocab, dim]; tokens [rows] (u32). Ids are checked by the caller; an id
// outside the vocabulary writes NaN rather than reading out of bounds.
template <typename T>
__device__ void embedding_fwd(T* out, const u32* tokens, const T* wte, long rows, int dim, int vocab) {
    const long n = rows * dim;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long m = i / dim;
        const int c = (int)(i - m * dim);
        const u32 t = tokens[m];
        st(out + i, t < (u32)vocab ? ld(wte + (long)t * dim + c) : SAMBA_NAN);
    }
}

extern "C" __global__ void embedding_fwd_f32(float* out, const u32* tokens, const float* wte,
                                             long rows, int dim, int vocab) {
    embedding_fwd(out, tokens, wte, rows, dim, vocab);
}
extern "C" __global__ void embedding_fwd_bf16(bf16_t* out, const u32* tokens, const bf16_t* wte,
                                              long rows, int dim, int vocab) {
    embedding_fwd(out, tokens, wte, rows, dim, vocab);
}
