// The whole decoding step as one persistent kernel (src/model/persistent.rs).
//
// The fused step (src/model/fused.rs) is ~100 kernels: the embedding, per sublayer two to four
// GEMVs with their elementwise work, the scan step, the decoding attention, the head and the
// position advance. Launched one by one, every kernel pays a fixed cost of ~4-5 us (the launch,
// the ramp until its first weights arrive, the tail while its last blocks finish) against the
// 2-13 us its weights take to stream at the bandwidth floor. Here one grid, resident on every SM
// at once (a cooperative launch), runs the same kernel bodies in order from a table of ops the
// host recorded from the fused step's launches:
//
//   for op k:  each block runs op k's virtual blocks v = blockIdx.x, blockIdx.x + gridDim.x, ...
//              (block() and size() are op k's own grid), and where the body calls wait() --
//              after requesting the weights it reads first, before reading anything an earlier
//              op wrote -- passes barrier k: every block has finished every op before k.
//
// so the first weights of op k are in flight while op k-1 finishes and the barrier completes,
// as programmatic dependent launch would allow, without the launch.
//
// Barrier k of launch L: one 64-bit counter to which every block adds 1 per barrier; barrier k
// is passed when counter >= base + k * gridDim.x with base = L * (n_ops - 1) * gridDim.x (the
// host counts the launches), so nothing is reset between launches. A block with no virtual block
// in op k still passes barrier k, and every barrier up to the last op before it exits, in order.
// A block's writes before a barrier are ordered before its arrival by __syncthreads and a
// gpu-scope fence; the fence after the read that sees the count orders the block's later reads
// after every arrival (the pattern of cooperative groups' grid sync).
//
// The table: [n_ops][PERSIST_OP_WORDS] u64: kind, grid x, y, z, then the kernel's arguments in
// the order of its entry point, one word each (pointers; ints and floats in the low 32 bits). The
// next op's words are loaded while an op runs and staged in shared memory.
#define PERSIST_THREADS 128
#ifndef PERSIST_MIN_BLOCKS
#define PERSIST_MIN_BLOCKS 4
#endif
#define PERSIST_MAX_ARGS 20
#define PERSIST_OP_WORDS (4 + PERSIST_MAX_ARGS)

// The op kinds (src/model/persistent.rs: `OpKind`).
#define PERSIST_EMBEDDING 1
#define PERSIST_GEMV 2
#define PERSIST_GEMV_SWIGLU 3
#define PERSIST_GEMV_ROPE 4
#define PERSIST_GEMV_CONV 5
#define PERSIST_SCAN_STEP 6
#define PERSIST_ATTENTION 7
#define PERSIST_POSITIONS 8

typedef unsigned long long u64;

__device__ __forceinline__ u64 persist_ld_relaxed(const u64* p) {
    u64 v;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

// The barrier's state, in shared memory (set once per launch; kept out of the registers the
// op bodies need).
__device__ __forceinline__ unsigned persist_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

struct PersistSync {
    u64* count;
    u64 base;
    int passed;   // the last barrier this block passed
    int poll_ns;  // pause between two reads of the counter
};
__shared__ PersistSync persist_sync;

// Passes every barrier up to k this block has not passed yet (uniform over the block).
__device__ __noinline__ void persist_pass(int k) {
    while (persist_sync.passed < k) {
        const int j = persist_sync.passed + 1;
        __syncthreads();
        if (threadIdx.x == 0) {
            __threadfence();
            atomicAdd(persist_sync.count, 1ull);
            const u64 target = persist_sync.base + (u64)j * gridDim.x;
            // Relaxed reads with pauses: hundreds of blocks polling one line as fast as they can
            // would queue the weights' loads that map to the same L2 slice behind the polls.
            while (persist_ld_relaxed(persist_sync.count) < target) {
                if (persist_sync.poll_ns > 0) __nanosleep(persist_sync.poll_ns);
            }
            __threadfence();  // acquire: the reads after the barrier see every block's writes
            persist_sync.passed = j;
        }
        __syncthreads();
    }
}

// The grid of op `op`, as the bodies see it (KernelGrid's interface, pdl.cuh).
struct PersistentGrid {
    uint3 blk, dim;
    int op;
    __device__ __forceinline__ uint3 block() const { return blk; }
    __device__ __forceinline__ uint3 size() const { return dim; }
    __device__ __forceinline__ void wait() const { persist_pass(op); }
};

// One virtual block of each op kind: the kernel's arguments from the table, in its entry's order.
#define PTR(i, type) ((type)a[i])
#define INT(i) ((int)a[i])
#define FLT(i) __uint_as_float((u32)a[i])
template <typename T>
__device__ __forceinline__ void persist_embedding(const u64* a, const PersistentGrid& g) {
    embedding_residual_fwd<T>(g, PTR(0, float*), PTR(1, const u32*), PTR(2, const T*), (long)a[3], INT(4), INT(5));
}
template <typename T, int MR>
__device__ __forceinline__ void persist_gemv(const u64* a, const PersistentGrid& g) {
    gemv_fwd<T, PersistentGrid, MR>(g, PTR(0, void*), INT(1), INT(2), PTR(3, const T*), INT(4), PTR(5, const float*), PTR(6, const T*),
                FLT(7), PTR(8, const T*), INT(9), INT(10), INT(11), INT(12));
}
template <typename T, int MR>
__device__ __forceinline__ void persist_gemv_swiglu(const u64* a, const PersistentGrid& g) {
    gemv_swiglu_fwd<T, PersistentGrid, MR>(g, PTR(0, T*), INT(1), PTR(2, const T*), INT(3), PTR(4, const float*), PTR(5, const T*),
                       FLT(6), PTR(7, const T*), INT(8), INT(9), INT(10), INT(11));
}
template <typename T, int MR>
__device__ __forceinline__ void persist_gemv_rope(const u64* a, const PersistentGrid& g) {
    gemv_rope_fwd<T, PersistentGrid, MR>(g, PTR(0, T*), INT(1), PTR(2, const float*), PTR(3, const float*), PTR(4, const int*), INT(5),
                     INT(6), PTR(7, const T*), INT(8), PTR(9, const float*), PTR(10, const T*), FLT(11),
                     PTR(12, const T*), INT(13), INT(14), INT(15), INT(16));
}
template <typename T, int MR>
__device__ __forceinline__ void persist_gemv_conv(const u64* a, const PersistentGrid& g) {
    gemv_conv_fwd<T, PersistentGrid, MR>(g, PTR(0, T*), PTR(1, T*), PTR(2, T*), PTR(3, const T*), PTR(4, const T*), INT(5), INT(6),
                     PTR(7, const T*), INT(8), PTR(9, const float*), PTR(10, const T*), FLT(11), PTR(12, const T*),
                     INT(13), INT(14), INT(15));
}
template <typename T>
__device__ __forceinline__ void persist_scan_step(const u64* a, const PersistentGrid& g) {
    mamba_scan_step_fwd<T>(g, PTR(0, T*), PTR(1, float*), PTR(2, const T*), PTR(3, const T*), PTR(4, const T*),
                           INT(5), PTR(6, const T*), PTR(7, const T*), PTR(8, const T*), PTR(9, const T*), INT(10),
                           INT(11), INT(12));
}
template <typename T>
__device__ __forceinline__ void persist_attention(const u64* a, const PersistentGrid& g) {
    attention_decode_fwd<T>(g, PTR(0, T*), PTR(1, float*), PTR(2, unsigned*), PTR(3, const T*), PTR(4, T*),
                            PTR(5, T*), PTR(6, const int*), INT(7), INT(8), INT(9), INT(10), INT(11), INT(12));
}
__device__ __forceinline__ void persist_positions(const u64* a, const PersistentGrid& g) {
    positions_advance_body(g, PTR(0, int*), INT(1), INT(2));
}
#undef PTR
#undef INT
#undef FLT

template <typename T>
__device__ __forceinline__ void persist_op(int kind, const u64* a, const PersistentGrid& g) {
    switch (kind) {
    case PERSIST_EMBEDDING: persist_embedding<T>(a, g); break;
    // The GEMVs of one row (batch 1) compiled for one row: the registers of the other three
    // rows' sums and norms would not fit beside the arguments, which here are registers, not
    // kernel parameters.
    case PERSIST_GEMV:
        if (a[9] == 1) persist_gemv<T, 1>(a, g);
        else persist_gemv<T, GEMV_MAX_ROWS>(a, g);
        break;
    case PERSIST_GEMV_SWIGLU:
        if (a[8] == 1) persist_gemv_swiglu<T, 1>(a, g);
        else persist_gemv_swiglu<T, GEMV_MAX_ROWS>(a, g);
        break;
    case PERSIST_GEMV_ROPE:
        if (a[13] == 1) persist_gemv_rope<T, 1>(a, g);
        else persist_gemv_rope<T, GEMV_MAX_ROWS>(a, g);
        break;
    case PERSIST_GEMV_CONV:
        if (a[13] == 1) persist_gemv_conv<T, 1>(a, g);
        else persist_gemv_conv<T, GEMV_MAX_ROWS>(a, g);
        break;
    case PERSIST_SCAN_STEP: persist_scan_step<T>(a, g); break;
    case PERSIST_ATTENTION: persist_attention<T>(a, g); break;
    case PERSIST_POSITIONS: persist_positions(a, g); break;
    default: break;  // the host records only the kinds above
    }
}

template <typename T>
__device__ __forceinline__ void decode_persistent(const u64* ops, int n_ops, u64* count, u64 base, int poll_ns) {
    __shared__ u64 desc[2][PERSIST_OP_WORDS];
    if (threadIdx.x < PERSIST_OP_WORDS) desc[0][threadIdx.x] = ops[threadIdx.x];
    if (threadIdx.x == 0) {
        persist_sync.count = count;
        persist_sync.base = base;
        persist_sync.passed = 0;
        persist_sync.poll_ns = poll_ns;
    }
    __syncthreads();
    for (int k = 0; k < n_ops; ++k) {
        const u64* d = desc[k & 1];
        // The next op's words, copied into shared memory while this op runs (cp.async: no
        // register held across the op).
        if (k + 1 < n_ops && threadIdx.x < PERSIST_OP_WORDS) {
            const u64* src = ops + (long)(k + 1) * PERSIST_OP_WORDS + threadIdx.x;
            const unsigned dst = persist_smem_addr(&desc[(k + 1) & 1][threadIdx.x]);
            asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(dst), "l"(src) : "memory");
        }
        asm volatile("cp.async.commit_group;" ::: "memory");
        PersistentGrid g;
        g.dim.x = (unsigned)d[1];
        g.dim.y = (unsigned)d[2];
        g.dim.z = (unsigned)d[3];
        g.op = k;
        const int kind = (int)d[0];
        const long n = (long)g.dim.x * g.dim.y * g.dim.z;
        for (long v = blockIdx.x; v < n; v += gridDim.x) {
            g.blk.x = (unsigned)(v % g.dim.x);
            g.blk.y = (unsigned)((v / g.dim.x) % g.dim.y);
            g.blk.z = (unsigned)(v / ((long)g.dim.x * g.dim.y));
            persist_op<T>(kind, d + 4, g);
        }
        asm volatile("cp.async.wait_all;" ::: "memory");
        __syncthreads();
    }
    persist_pass(n_ops - 1);
}

#define PERSIST_ARGS const u64 *ops, int n_ops, u64 *count, u64 base, int poll_ns
extern "C" __global__ void __launch_bounds__(PERSIST_THREADS, PERSIST_MIN_BLOCKS) decode_persistent_f32(PERSIST_ARGS) {
    decode_persistent<float>(ops, n_ops, count, base, poll_ns);
}
extern "C" __global__ void __launch_bounds__(PERSIST_THREADS, PERSIST_MIN_BLOCKS) decode_persistent_bf16(PERSIST_ARGS) {
    decode_persistent<bf16_t>(ops, n_ops, count, base, poll_ns);
}
