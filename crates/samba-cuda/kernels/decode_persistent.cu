// The decoding step as persistent kernels (src/model/persistent.rs).
//
// The fused step (src/model/fused.rs) is ~100 kernels: the embedding, per sublayer two to four
// GEMVs with their elementwise work, the scan step, the decoding attention, the head and the
// position advance. Launched one by one, every kernel pays a fixed cost of ~4-5 us (the launch,
// the ramp until its first weights arrive, the tail while its last blocks finish) against the
// 2-13 us its weights take to stream at the bandwidth floor. Here a grid resident on every SM at
// once (a cooperative launch) runs the same kernel bodies in order, from a table of ops the host
// recorded from the fused step's launches:
//
//   for op k:  each block runs op k's virtual blocks v = blockIdx.x, blockIdx.x + gridDim.x, ...
//              (block() and size() are op k's own grid), and where the body calls wait() --
//              after requesting the weights it reads first, before reading anything an earlier
//              op wrote -- passes barrier k: every block has finished every op before k.
//
// so the first weights of op k are in flight while op k-1 finishes and the barrier completes,
// as programmatic dependent launch would allow, without the launch. The decoding attention runs
// as its own kernel between two such launches: compiled into this function its body made ptxas
// spill (its key and merge registers beside the GEMV's), and so would any second GEMV body,
// which is why the dense layers share one (persist_dense below).
//
// Barrier k of a launch: one 64-bit counter to which every block adds 1 per barrier; barrier k
// is passed when counter >= base + k * gridDim.x, base = the barriers of every earlier launch
// times gridDim.x (the host counts them), so nothing is reset between launches. A block with no
// virtual block in op k still passes barrier k, and every barrier up to the last op before it
// exits, in order.
// A block's writes before a barrier are ordered before its arrival by __syncthreads and a
// gpu-scope fence; the fence after the read that sees the count orders the block's later reads
// after every arrival (the pattern of cooperative groups' grid sync).
//
// The table: [n_ops][PERSIST_OP_WORDS] u64: kind, grid x, y, z, then the kernel's arguments in
// the order of its entry point, one word each (pointers; ints and floats in the low 32 bits). The
// next op's words are loaded while an op runs and staged in shared memory.
#define PERSIST_THREADS 128
#ifndef PERSIST_MIN_BLOCKS  // 3: 168 registers, what the bodies need without spilling
#define PERSIST_MIN_BLOCKS 3
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
#define PERSIST_POSITIONS 8

typedef unsigned long long u64;

__device__ __forceinline__ u64 persist_ld_relaxed(const u64* p) {
    u64 v;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

// The shared-memory address of p (for cp.async).
__device__ __forceinline__ unsigned persist_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// The barrier's state, in shared memory (set once per launch; kept out of the registers the
// op bodies need).
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

// ---- the dense layers: one GEMV body for all four kinds
//
// Compiled once: two GEMV bodies in one kernel (e.g. the plain one and the SwiGLU one) already
// made ptxas spill (ptxas -v, sm_90, 128-168 registers), and the spills cost more than the
// kernel boundaries they replace. So every dense layer runs the same instantiation, one input row
// (batch 1), two weight rows per unit, and the kind only changes which rows a unit takes and how
// they are stored:
//   plain, conv  rows (2u, 2u + 1)          (the second row clamped to the last, not stored, when
//                                             the count is odd)
//   SwiGLU       rows (u, hidden + u)
//   RoPE         rows (i, i + hd/2) of a head
// The epilogue reads what a store needs (the residual for +=, the conv state and weights, cos and
// sin) when it stores, not a unit ahead as the standalone kernels do: fewer registers held.
struct PersistMap {
    int kind, in, n, hidden, head_dim;
    __device__ void operator()(int u, long (&row)[2]) const {
        if (kind == PERSIST_GEMV_SWIGLU) {
            row[0] = (long)u * in;
            row[1] = (long)(u + hidden) * in;
        } else if (kind == PERSIST_GEMV_ROPE) {
            GemvRopePair{in, head_dim}(u, row);
        } else {
            row[0] = (long)(2 * u) * in;
            row[1] = (long)min(2 * u + 1, n - 1) * in;
        }
    }
};

template <typename T>
struct PersistEpi {
    int kind;
    // plain: out, stride, mode (as GemvStore); SwiGLU: out = act, stride; RoPE: out = qkv,
    // stride, head_dim, q_per_kv, cos_t, sin_t, pos; conv: u, out = xz, state, conv_w, conv_b,
    // d_inner, d_conv
    void* out;
    int stride, mode, n, head_dim, q_per_kv, d_inner, d_conv;
    const float *cos_t, *sin_t;
    const int* pos;
    T *u, *state;
    const T *conv_w, *conv_b;
    using Pre = GemvNoPre;
    __device__ void prefetch(int, int, Pre&) const {}
    __device__ void store_row(int o, float y) const {
        if (kind == PERSIST_GEMV) {
            typename GemvStore<T>::Pre pre;
            GemvStore<T> st_{out, stride, mode};
            st_.prefetch(o, 0, pre);
            const float v[1] = {y};
            st_.store(o, 0, v, pre);
        } else {
            GemvConv<T> c{u, static_cast<T*>(out), state, conv_w, conv_b, d_inner, d_conv};
            typename GemvConv<T>::Pre pre;
            c.prefetch(o, 0, pre);
            const float v[1] = {y};
            c.store(o, 0, v, pre);
        }
    }
    __device__ void store(int unit, int r, const float (&y)[2], const Pre&) const {
        if (kind == PERSIST_GEMV_SWIGLU) {
            GemvSwiglu<T>{static_cast<T*>(out), stride}.store(unit, r, y, GemvNoPre{});
        } else if (kind == PERSIST_GEMV_ROPE) {
            GemvRope<T> rope{static_cast<T*>(out), stride, head_dim, q_per_kv, cos_t, sin_t, pos};
            typename GemvRope<T>::Pre pre;
            rope.prefetch(unit, r, pre);
            rope.store(unit, r, y, pre);
        } else {
            store_row(2 * unit, y[0]);
            if (2 * unit + 1 < n) store_row(2 * unit + 1, y[1]);
        }
    }
};

// A dense layer of one row: the arguments of gemv_fwd / gemv_swiglu_fwd / gemv_rope_fwd /
// gemv_conv_fwd (their entries' order) into the one body.
template <typename T>
__device__ __forceinline__ void persist_dense(int kind, const u64* a, const PersistentGrid& g) {
#define PTR(i, type) ((type)a[i])
#define INT(i) ((int)a[i])
#define FLT(i) __uint_as_float((u32)a[i])
    PersistMap m = {kind, 0, 0, 0, 0};
    PersistEpi<T> e = {};
    e.kind = kind;
    int first;  // the index of the input's first argument (inp)
    int n_units;
    if (kind == PERSIST_GEMV) {
        e.out = PTR(0, void*);
        e.stride = INT(1);
        e.mode = INT(2);
        first = 3;
        m.n = e.n = INT(11);
        n_units = (m.n + 1) / 2;
    } else if (kind == PERSIST_GEMV_SWIGLU) {
        e.out = PTR(0, void*);
        e.stride = INT(1);
        first = 2;
        m.hidden = INT(10);
        n_units = m.hidden;
    } else if (kind == PERSIST_GEMV_ROPE) {
        e.out = PTR(0, void*);
        e.stride = INT(1);
        e.cos_t = PTR(2, const float*);
        e.sin_t = PTR(3, const float*);
        e.pos = PTR(4, const int*);
        m.head_dim = e.head_dim = INT(5);
        e.q_per_kv = INT(6);
        first = 7;
        n_units = INT(15) / 2;
    } else {  // conv
        e.u = PTR(0, T*);
        e.out = PTR(1, void*);
        e.state = PTR(2, T*);
        e.conv_w = PTR(3, const T*);
        e.conv_b = PTR(4, const T*);
        e.d_inner = INT(5);
        e.d_conv = INT(6);
        first = 7;
        m.n = e.n = 2 * e.d_inner;
        n_units = e.d_inner;
    }
    // inp, inp_stride, x, norm_w, eps, w, rows, in, [n_out | hidden], k_split
    m.in = INT(first + 7);
    const int k_split = kind == PERSIST_GEMV_CONV ? INT(first + 8) : INT(first + 9);
    gemv_body<T, 2, PersistMap, PersistEpi<T>, PersistentGrid, 1>(
        g, PTR(first + 5, const T*), m.in, n_units, k_split, 1, PTR(first, const T*), INT(first + 1),
        PTR(first + 2, const float*), PTR(first + 3, const T*), FLT(first + 4), m, e);
#undef PTR
#undef INT
#undef FLT
}

// One virtual block of each other op kind: the kernel's arguments from the table, in its entry's
// order.
#define PTR(i, type) ((type)a[i])
#define INT(i) ((int)a[i])
#define FLT(i) __uint_as_float((u32)a[i])
template <typename T>
__device__ __forceinline__ void persist_embedding(const u64* a, const PersistentGrid& g) {
    embedding_residual_fwd<T>(g, PTR(0, float*), PTR(1, const u32*), PTR(2, const T*), (long)a[3], INT(4), INT(5));
}
template <typename T>
__device__ __forceinline__ void persist_scan_step(const u64* a, const PersistentGrid& g) {
    mamba_scan_step_fwd<T>(g, PTR(0, T*), PTR(1, float*), PTR(2, const T*), PTR(3, const T*), PTR(4, const T*),
                           INT(5), PTR(6, const T*), PTR(7, const T*), PTR(8, const T*), PTR(9, const T*), INT(10),
                           INT(11), INT(12));
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
    case PERSIST_GEMV:
    case PERSIST_GEMV_SWIGLU:
    case PERSIST_GEMV_ROPE:
    case PERSIST_GEMV_CONV: persist_dense<T>(kind, a, g); break;
    case PERSIST_SCAN_STEP: persist_scan_step<T>(a, g); break;
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
