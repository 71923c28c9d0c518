// The decoding step as persistent kernels (src/model/persistent.rs).
//
// The fused step (src/model/fused.rs) is ~100 kernels: the embedding, per sublayer two to four
// GEMVs with their elementwise work, the scan step, the decoding attention, the head and the
// position advance. Launched one by one, every kernel pays a fixed cost of ~4-5 us (the launch,
// the ramp until its first weights arrive, the tail while its last blocks finish) against the
// 2-13 us its weights take to stream at the bandwidth floor. Here a grid resident on every SM (a
// cooperative launch) runs the same ops in order, from a table the host recorded from the fused
// step's launches, with a grid-wide barrier where the kernel boundaries were.
//
// Weights do not depend on the token, so they need not wait for any barrier. Each block is a
// producer warp and PERSIST_CONSUMERS / 32 consumer warps (4 by default):
//
//   producer   walks the block's share of every dense op of the launch in order and copies its
//              weight rows into a ring of shared memory with bulk copies (cp.async.bulk, the
//              copy engine; no registers held), a stage of whole units at a time, as far ahead
//              as the ring has room: across the barriers, while the consumers wait at them
//   consumers  for op k: pass barrier k (every block has finished op k-1), stage the op's input
//              row (RMSNorm'd if the op has one) in shared memory, then for each of the block's
//              stages of op k, warp s % warps takes stage s: waits until its bytes landed, takes
//              the dot products of its rows with the input (up to four rows per pass over the
//              input), frees the stage; then the block stores its units through the op's
//              epilogue (gemv.cu: plain, +=, SwiGLU, RoPE, conv step)
//
//   full[slot]   mbarrier: the producer's arrival with the stage's byte count; completes when
//                the copies have written them
//   empty[slot]  mbarrier: the consuming warp's arrival; the producer reuses the slot's bytes
//                after it (the ring is reclaimed in issue order)
//
// so the DRAM keeps streaming through the barriers up to the ring's size (~100 KB per block, two
// blocks per SM: ~6 us at the bandwidth floor). The other ops (the embedding, the scan step, the
// position advance) run as virtual blocks of their recorded grid on the consumer warps, with the
// same bodies as their own kernels (g.threads() = 128, g.thread(), g.sync()). The decoding
// attention runs as its own kernel between two launches, or, in the _attention entries, as
// virtual blocks here too (opt-in: its registers make the dense phases spill).
//
// Measured on the H200 (docs/gpu.md, "Weights streamed through shared memory"): the producer's
// copies run near the bandwidth floor while it issues; what is left is the phases' dependent
// work (barrier, input row, the last stage's dot products, epilogue), which fills the ring and
// stalls the producer at every phase boundary.
//
// A dense op's block share: units [b n / G, (b + 1) n / G) of its n units (a unit: one weight row,
// or the two rows its epilogue combines: [w1; w2] rows (j, hidden + j), RoPE rows (i, i + hd/2)),
// cut into stages of whole units of at most PERSIST_STAGE_BYTES (at least one unit, and at most
// an even part of the share so every consumer warp takes part). Rows sit in the ring at a 16-byte
// aligned stride; rows that are not whole 16-byte vectors in memory (in * sizeof(T) % 16, an
// unaligned matrix) are copied by the producer's lanes instead of the copy engine, and read
// element-wise.
//
// Barrier k of a launch: one 64-bit counter to which every block adds 1 per barrier; barrier k
// is passed when counter >= base + k * gridDim.x, base = the barriers of every earlier launch
// times gridDim.x (the host counts them), so nothing is reset between launches. A block with no
// work in op k still passes barrier k, and every barrier up to the last op before it exits.
// A block's writes before a barrier are ordered before its arrival by the consumers' barrier and a
// gpu-scope fence; the fence after the read that sees the count orders the block's later reads
// after every arrival (the pattern of cooperative groups' grid sync).
//
// The table: [n_ops][PERSIST_OP_WORDS] u64: kind, grid x, y, z, then the kernel's arguments in
// the order of its entry point, one word each (pointers; ints and floats in the low 32 bits).
#define PERSIST_VBLOCK 128  // threads of a recorded op's block (a virtual block)
#ifndef PERSIST_CONSUMERS   // one or two virtual blocks at once (SAMBA_NVRTC_DEFINES)
#define PERSIST_CONSUMERS 128
#endif
#define PERSIST_THREADS (PERSIST_CONSUMERS + 32)  // and the producer warp
#define PERSIST_HALVES (PERSIST_CONSUMERS / PERSIST_VBLOCK)
#ifndef PERSIST_MIN_BLOCKS  // blocks per SM the registers are budgeted for (the host splits the
#define PERSIST_MIN_BLOCKS 2  // shared memory between as many as the registers allow)
#endif
#define PERSIST_MAX_ARGS 20
#define PERSIST_OP_WORDS (4 + PERSIST_MAX_ARGS)
#define PERSIST_SLOTS 32
#ifndef PERSIST_STAGE_BYTES  // a stage's whole units, up to this many bytes (SAMBA_NVRTC_DEFINES)
#define PERSIST_STAGE_BYTES 16384
#endif
#define PERSIST_CONSUMER_WARPS (PERSIST_CONSUMERS / 32)

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

// The shared-memory address of p.
__device__ __forceinline__ unsigned persist_smem_addr(const void* p) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// ---- mbarriers and bulk copies (sm_90)

__device__ __forceinline__ void mbar_init(u64* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(persist_smem_addr(bar)), "r"(count) : "memory");
}
// One arrival that also expects `bytes` more of transactions before the phase completes.
__device__ __forceinline__ void mbar_arrive_expect(u64* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(persist_smem_addr(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_arrive(u64* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(persist_smem_addr(bar)) : "memory");
}
// Returns once the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(u64* bar, unsigned parity) {
    const unsigned a = persist_smem_addr(bar);
    unsigned done;
    do {
        asm volatile(
            "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
            : "=r"(done)
            : "r"(a), "r"(parity)
            : "memory");
    } while (!done);
}
// bytes (a multiple of 16) from src (16-byte aligned) to dst in shared memory; completes as
// transactions on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, u64* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     persist_smem_addr(dst)),
                 "l"(src), "r"(bytes), "r"(persist_smem_addr(bar))
                 : "memory");
}

// ---- the grid barrier (consumer warps only; the producer never waits for other blocks)

__device__ __forceinline__ void persist_consumers_sync() {
    asm volatile("bar.sync 1, %0;" ::"n"(PERSIST_CONSUMERS) : "memory");
}

// The barrier's state, in shared memory (set once per launch).
struct PersistSync {
    u64* count;
    u64 base;
    int passed;   // the last barrier this block passed
    int poll_ns;  // pause between two reads of the counter
};
__shared__ PersistSync persist_sync;

// Passes every barrier up to k this block has not passed yet (uniform over the consumers).
__device__ __forceinline__ void persist_pass(int k) {
    while (persist_sync.passed < k) {
        const int j = persist_sync.passed + 1;
        persist_consumers_sync();
        if (threadIdx.x == 0) {
            __threadfence();
            atomicAdd(persist_sync.count, 1ull);
            const u64 target = persist_sync.base + (u64)j * gridDim.x;
            while (persist_ld_relaxed(persist_sync.count) < target) {
                if (persist_sync.poll_ns > 0) __nanosleep(persist_sync.poll_ns);
            }
            __threadfence();  // acquire: the reads after the barrier see every block's writes
            persist_sync.passed = j;
        }
        persist_consumers_sync();
    }
}

// Profiling (compile with SAMBA_NVRTC_DEFINES=PERSIST_PROFILE): thread 0 of the consumers and
// lane 0 of the producer add up SM cycles per part of the work, and block 0 prints them when a
// launch ends (one line per launch: ops, then the parts below).
#define PROF_PASS 0       // consumers: waiting at the grid barriers
#define PROF_INPUT 1      //            staging the input row
#define PROF_FULL 2       //            warp 0 waiting for its stages' bytes
#define PROF_DOT 3        //            warp 0's dot products
#define PROF_SYNC 4       //            waiting for the other warps of the block
#define PROF_EPILOGUE 5   //            storing the block's units
#define PROF_OTHER 6      //            the other ops (their barriers included)
#define PROF_EMPTY 7      // producer: waiting for room in the ring
#define PROF_ISSUE 8      //           issuing copies
#define PROF_PARTS 9
#ifdef PERSIST_PROFILE
__shared__ long long persist_prof[PROF_PARTS];
__shared__ long long persist_prof_t;
#define PERSIST_PROF_START \
    if (threadIdx.x == 0) persist_prof_t = clock64()
#define PERSIST_PROF_LAP(part)                       \
    if (threadIdx.x == 0) {                          \
        const long long now_ = clock64();            \
        persist_prof[part] += now_ - persist_prof_t; \
        persist_prof_t = now_;                       \
    }
#else
#define PERSIST_PROF_START
#define PERSIST_PROF_LAP(part)
#endif

// The grid of op `op`, as the bodies see it (KernelGrid's interface, pdl.cuh).
struct PersistentGrid {
    uint3 blk, dim;
    int op;
    __device__ __forceinline__ uint3 block() const { return blk; }
    __device__ __forceinline__ uint3 size() const { return dim; }
    __device__ __forceinline__ unsigned threads() const { return PERSIST_VBLOCK; }
    __device__ __forceinline__ unsigned thread() const { return threadIdx.x % PERSIST_VBLOCK; }
    // the threads of this virtual block (named barriers 2 and 3; 1 is every consumer's)
    __device__ __forceinline__ void sync() const {
        asm volatile("bar.sync %0, %1;" ::"r"(2 + threadIdx.x / PERSIST_VBLOCK), "n"(PERSIST_VBLOCK) : "memory");
    }
    __device__ __forceinline__ void wait() const { persist_pass(op); }
};

// ---- a dense op, read from its table row (the arguments of gemv_fwd / gemv_swiglu_fwd /
// gemv_rope_fwd / gemv_conv_fwd, in their entries' order)

template <typename T>
struct PersistDense {
    int kind;
    const T* w;
    int in, n_units, nr;  // units, and weight rows per unit
    int hidden, head_dim;  // SwiGLU, RoPE
    // the input row: inp (T), or RMSNorm(x) with norm_w and eps
    const T* inp;
    const float* x;
    const T* norm_w;
    float eps;
    const u64* a;  // the arguments (the epilogue's are read when storing)

    __device__ static bool is_dense(int kind) { return kind >= PERSIST_GEMV && kind <= PERSIST_GEMV_CONV; }

    __device__ PersistDense(int kind_, const u64* args) : kind(kind_), a(args) {
        int first;  // the index of the input's first argument (inp)
        hidden = head_dim = 0;
        if (kind == PERSIST_GEMV) {
            first = 3;
            n_units = (int)a[11];
            nr = 1;
        } else if (kind == PERSIST_GEMV_SWIGLU) {
            first = 2;
            hidden = (int)a[10];
            n_units = hidden;
            nr = 2;
        } else if (kind == PERSIST_GEMV_ROPE) {
            first = 7;
            head_dim = (int)a[5];
            n_units = (int)a[15] / 2;
            nr = 2;
        } else {  // conv: rows [x_in | z] of in_proj, one each
            first = 7;
            n_units = 2 * (int)a[5];
            nr = 1;
        }
        inp = (const T*)a[first];
        x = (const float*)a[first + 2];
        norm_w = (const T*)a[first + 3];
        eps = __uint_as_float((u32)a[first + 4]);
        w = (const T*)a[first + 5];
        in = (int)a[first + 7];
    }

    // The offset (elements) of row j of unit u in w.
    __device__ long row(int u, int j) const {
        if (kind == PERSIST_GEMV_SWIGLU) return (long)(u + j * hidden) * in;
        if (kind == PERSIST_GEMV_ROPE) {
            const int half = head_dim / 2;
            return (long)((u / half) * head_dim + u % half + j * half) * in;
        }
        return (long)u * in;
    }
    // A row's bytes in the ring (16-byte aligned), and whether rows are whole aligned 16-byte vectors
    // in memory (else the producer copies them element by element).
    __device__ int row_stride() const { return (int)(((long)in * sizeof(T) + 15) & ~15L); }
    __device__ bool vec16() const { return ((long)in * sizeof(T)) % 16 == 0 && gemv_aligned(w); }

    // This block's units [u0, u1), and the units per stage.
    __device__ void share(int& u0, int& u1, int& per_stage) const {
        u0 = (int)((long)blockIdx.x * n_units / gridDim.x);
        u1 = (int)((long)(blockIdx.x + 1) * n_units / gridDim.x);
        const int fit = max(1, PERSIST_STAGE_BYTES / (nr * row_stride()));
        const int even = max(1, (u1 - u0 + PERSIST_CONSUMER_WARPS - 1) / PERSIST_CONSUMER_WARPS);
        per_stage = min(fit, even);
    }

    // Stores unit u's sums y[0..nr) through the op's epilogue (batch row 0).
    __device__ void store(int u, const float* y) const {
#define PTR(i, type) ((type)a[i])
#define INT(i) ((int)a[i])
        if (kind == PERSIST_GEMV) {
            GemvStore<T> s{PTR(0, void*), INT(1), INT(2)};
            typename GemvStore<T>::Pre pre;
            s.prefetch(u, 0, pre);
            const float v[1] = {y[0]};
            s.store(u, 0, v, pre);
        } else if (kind == PERSIST_GEMV_SWIGLU) {
            const float v[2] = {y[0], y[1]};
            GemvSwiglu<T>{PTR(0, T*), INT(1)}.store(u, 0, v, GemvNoPre{});
        } else if (kind == PERSIST_GEMV_ROPE) {
            GemvRope<T> r{PTR(0, T*), INT(1), INT(5), INT(6), PTR(2, const float*), PTR(3, const float*),
                          PTR(4, const int*)};
            typename GemvRope<T>::Pre pre;
            r.prefetch(u, 0, pre);
            const float v[2] = {y[0], y[1]};
            r.store(u, 0, v, pre);
        } else {
            GemvConv<T> c{PTR(0, T*), PTR(1, T*), PTR(2, T*), PTR(3, const T*), PTR(4, const T*), INT(5), INT(6)};
            typename GemvConv<T>::Pre pre;
            c.prefetch(u, 0, pre);
            const float v[1] = {y[0]};
            c.store(u, 0, v, pre);
        }
#undef PTR
#undef INT
    }
};

// The ring's bookkeeping, shared by the producer (who writes it) and the consumers (who read a
// stage's offset after its full barrier).
struct PersistRing {
    u64 full[PERSIST_SLOTS];
    u64 empty[PERSIST_SLOTS];
    unsigned offset[PERSIST_SLOTS];  // the stage's first byte in the ring
    u64 end[PERSIST_SLOTS];          // the stage's end in the stream of bytes (producer only)
};

// ---- the producer warp

template <typename T>
__device__ void persist_produce(const u64* ops, int n_ops, unsigned char* ring, unsigned ring_bytes, PersistRing& rb) {
    const int lane = threadIdx.x & 31;
    u64 head = 0, tail = 0;     // bytes issued / freed, as positions in the unbounded stream
    unsigned issued = 0, freed = 0;  // stages
    for (int k = 0; k < n_ops; ++k) {
        const u64* d = ops + (long)k * PERSIST_OP_WORDS;
        const int kind = (int)d[0];
        if (!PersistDense<T>::is_dense(kind)) continue;
        const PersistDense<T> op(kind, d + 4);
        int u0, u1, per;
        op.share(u0, u1, per);
        const int rs = op.row_stride();
        const bool vec16 = op.vec16();
        for (int s0 = u0; s0 < u1; s0 += per) {
            const int units = min(per, u1 - s0);
            const int rows = units * op.nr;
            const unsigned bytes = (unsigned)(rows * rs);
            // Room: whole in the ring (skip its end if the stage would wrap), every byte of it
            // freed, and a free slot.
            const u64 off0 = head % ring_bytes;
            if (off0 + bytes > ring_bytes) head += ring_bytes - off0;
#ifdef PERSIST_PROFILE
            const long long t0 = clock64();
#endif
            while (head + bytes > tail + ring_bytes || issued - freed == PERSIST_SLOTS) {
                const unsigned f = freed % PERSIST_SLOTS;
                mbar_wait(&rb.empty[f], (freed / PERSIST_SLOTS) & 1);
                tail = rb.end[f];
                ++freed;
            }
#ifdef PERSIST_PROFILE
            const long long t1 = clock64();
            if (lane == 0) persist_prof[PROF_EMPTY] += t1 - t0;
#endif
            const unsigned slot = issued % PERSIST_SLOTS;
            unsigned char* dst = ring + head % ring_bytes;
            __syncwarp();
            if (lane == 0) {
                rb.offset[slot] = (unsigned)(head % ring_bytes);
                rb.end[slot] = head + bytes;
            }
            if (vec16) {
                // the copy engine: one copy per row; the barrier's phase completes when the
                // bytes have landed (its one arrival, lane 0's, carries the byte count)
                if (lane == 0) mbar_arrive_expect(&rb.full[slot], bytes);
                __syncwarp();
                for (int r = lane; r < rows; r += 32) {
                    const int u = s0 + r / op.nr, j = r % op.nr;
                    bulk_copy(dst + (long)r * rs, op.w + op.row(u, j), (unsigned)rs, &rb.full[slot]);
                }
            } else {
                for (int r = 0; r < rows; ++r) {
                    const T* src = op.w + op.row(s0 + r / op.nr, r % op.nr);
                    T* to = reinterpret_cast<T*>(dst + (long)r * rs);
                    for (int i = lane; i < op.in; i += 32) to[i] = src[i];
                }
                // The copies above are ordinary stores: visible to the consumers through the
                // arrival's release, and ordered before any later bulk copy into these bytes.
                asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
                __syncwarp();
                if (lane == 0) mbar_arrive(&rb.full[slot]);
            }
            __syncwarp();
#ifdef PERSIST_PROFILE
            if (lane == 0) persist_prof[PROF_ISSUE] += clock64() - t1;
#endif
            head += bytes;
            ++issued;
        }
    }
}

// ---- the consumer warps

// The consumer threads as a group for the reductions of common.cuh (group_sum).
struct PersistConsumers {
    __device__ __forceinline__ unsigned thread() const { return threadIdx.x; }
    __device__ __forceinline__ unsigned threads() const { return PERSIST_CONSUMERS; }
    __device__ __forceinline__ void sync() const { persist_consumers_sync(); }
};

// xs = the op's input row in T: inp, or x * rstd * norm_w, rstd = 1 / sqrt(mean x^2 + eps), each
// element rounded to T as the unfused path stores it. Every load of a part is issued before the
// first is used (a row is a few 16-byte vectors per thread: PERSIST_INPUT_VECS of them in
// registers, the rest, rarely any, element by element). The norm weight does not depend on the
// token: persist_input_prefetch loads it before the barrier.
#ifndef PERSIST_INPUT_VECS
#define PERSIST_INPUT_VECS (768 / PERSIST_CONSUMERS)  // a row of 6144 bf16 or 3072 f32
#endif
struct PersistInputRegs {
    uint4 v[PERSIST_INPUT_VECS];
};

// Vectors [threadIdx.x + k * PERSIST_CONSUMERS] of p (n of them), into r.
__device__ __forceinline__ void persist_load_vecs(PersistInputRegs& r, const void* p, int n) {
#pragma unroll
    for (int k = 0; k < PERSIST_INPUT_VECS; ++k) {
        const int id = threadIdx.x + k * PERSIST_CONSUMERS;
        if (id < n) r.v[k] = reinterpret_cast<const uint4*>(p)[id];
    }
}
__device__ __forceinline__ void persist_store_vecs(void* p, const PersistInputRegs& r, int n) {
#pragma unroll
    for (int k = 0; k < PERSIST_INPUT_VECS; ++k) {
        const int id = threadIdx.x + k * PERSIST_CONSUMERS;
        if (id < n) reinterpret_cast<uint4*>(p)[id] = r.v[k];
    }
}

// Whether n elements of T at p can be staged as 16-byte vectors held in registers.
template <typename T>
__device__ __forceinline__ bool persist_vec_ok(const void* p, int n) {
    return (n * (int)sizeof(T)) % 16 == 0 && gemv_aligned(p) &&
           n * (int)sizeof(T) / 16 <= PERSIST_INPUT_VECS * PERSIST_CONSUMERS;
}

template <typename T>
__device__ __forceinline__ void persist_input_prefetch(PersistInputRegs& nw, const PersistDense<T>& op) {
    if (op.x && persist_vec_ok<T>(op.norm_w, op.in)) persist_load_vecs(nw, op.norm_w, op.in * (int)sizeof(T) / 16);
}

template <typename T>
__device__ void persist_stage_input(T* xs, const PersistDense<T>& op, const PersistInputRegs& nw, float* scratch) {
    const int in = op.in;
    if (!op.x) {
        if (persist_vec_ok<T>(op.inp, in)) {
            PersistInputRegs r;
            const int n = in * (int)sizeof(T) / 16;
            persist_load_vecs(r, op.inp, n);
            persist_store_vecs(xs, r, n);
        } else {
            for (int i = threadIdx.x; i < in; i += PERSIST_CONSUMERS) xs[i] = op.inp[i];
        }
        persist_consumers_sync();
        return;
    }
    // xs = the norm weight; this thread's elements of x, and their squares
    const bool wvec = persist_vec_ok<T>(op.norm_w, in), xvec = persist_vec_ok<float>(op.x, in);
    const int nw_n = wvec ? in * (int)sizeof(T) / 16 : 0, nx = xvec ? in / 4 : 0;
    PersistInputRegs xr;
    persist_load_vecs(xr, op.x, nx);
    persist_store_vecs(xs, nw, nw_n);
    if (!wvec)
        for (int i = threadIdx.x; i < in; i += PERSIST_CONSUMERS) xs[i] = op.norm_w[i];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < PERSIST_INPUT_VECS; ++k) {
        const float4 f = reinterpret_cast<const float4&>(xr.v[k]);
        if (threadIdx.x + k * PERSIST_CONSUMERS < nx) ss += f.x * f.x + f.y * f.y + f.z * f.z + f.w * f.w;
    }
    if (!xvec)
        for (int i = threadIdx.x; i < in; i += PERSIST_CONSUMERS) ss += op.x[i] * op.x[i];
    // (the sum's barriers also publish the weight in xs)
    const float rs = 1.0f / sqrtf(group_sum(PersistConsumers{}, ss, scratch) / (float)in + op.eps);
    // each element of x is normalised by the thread that loaded it
#pragma unroll
    for (int k = 0; k < PERSIST_INPUT_VECS; ++k) {
        const int id = threadIdx.x + k * PERSIST_CONSUMERS;
        if (id < nx) {
            const float4 f = reinterpret_cast<const float4&>(xr.v[k]);
            T* o = xs + 4 * id;
            st(o + 0, f.x * rs * ld(o + 0));
            st(o + 1, f.y * rs * ld(o + 1));
            st(o + 2, f.z * rs * ld(o + 2));
            st(o + 3, f.w * rs * ld(o + 3));
        }
    }
    if (!xvec)
        for (int i = threadIdx.x; i < in; i += PERSIST_CONSUMERS) st(xs + i, op.x[i] * rs * ld(xs + i));
    persist_consumers_sync();
}

// ys[r] = the dot products of rows [r, r + R) in the ring (a stride of rs bytes) with xs, by one
// warp (lane 0 stores): each input vector is unpacked once for the R rows. Each row's sum runs as
// PERSIST_DOT_CHAINS chains (element e of a vector into chain e % chains), added at the end. With
// one chain (the default, the configuration measured) a stage's row is a single chain of
// dependent FMAs; the profile puts warp 0 at ~8 GB/s of weights, latency-bound, so more chains
// are the next thing to measure (untested on the GPU: SAMBA_NVRTC_DEFINES=PERSIST_DOT_CHAINS=2).
#ifndef PERSIST_DOT_CHAINS  // 1 .. 8
#define PERSIST_DOT_CHAINS 1
#endif
template <typename T, int R>
__device__ __forceinline__ void persist_dots(const unsigned char* row0, int rs, const T* xs, int in, bool vec, int lane,
                                             float* ys) {
    constexpr int VEC = GemvVec<T>::N;
    float acc[R][PERSIST_DOT_CHAINS];
#pragma unroll
    for (int j = 0; j < R; ++j)
#pragma unroll
        for (int c = 0; c < PERSIST_DOT_CHAINS; ++c) acc[j][c] = 0.0f;
    if (vec) {
        const uint4* xv = reinterpret_cast<const uint4*>(xs);
        const int nv = in / VEC;
#pragma unroll 2
        for (int v = lane; v < nv; v += 32) {
            float xf[VEC];
            gemv_unpack<T>(xf, xv[v]);
#pragma unroll
            for (int j = 0; j < R; ++j) {
                float wf[VEC];
                gemv_unpack<T>(wf, reinterpret_cast<const uint4*>(row0 + (long)j * rs)[v]);
#pragma unroll
                for (int e = 0; e < VEC; ++e)
                    acc[j][e % PERSIST_DOT_CHAINS] = fmaf(wf[e], xf[e], acc[j][e % PERSIST_DOT_CHAINS]);
            }
        }
    } else {
        for (int i = lane; i < in; i += 32) {
            const float xf = ld(xs + i);
#pragma unroll
            for (int j = 0; j < R; ++j) acc[j][0] += ld(reinterpret_cast<const T*>(row0 + (long)j * rs) + i) * xf;
        }
    }
#pragma unroll
    for (int j = 0; j < R; ++j) {
        float t = acc[j][0];
#pragma unroll
        for (int c = 1; c < PERSIST_DOT_CHAINS; ++c) t += acc[j][c];
        const float y = warp_sum(t);
        if (lane == 0) ys[j] = y;
    }
}

// Op k, a dense layer, on the consumer warps; `stage` counts the block's stages before it.
template <typename T>
__device__ void persist_consume(const PersistDense<T>& op, int k, unsigned& stage, const unsigned char* ring,
                                PersistRing& rb, T* xs, float* ys, float* scratch) {
    constexpr int VEC = GemvVec<T>::N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    PersistInputRegs nw;
    persist_input_prefetch(nw, op);
    PERSIST_PROF_START;
    persist_pass(k);
    PERSIST_PROF_LAP(PROF_PASS);
    persist_stage_input(xs, op, nw, scratch);
    PERSIST_PROF_LAP(PROF_INPUT);
    int u0, u1, per;
    op.share(u0, u1, per);
    const int rs = op.row_stride();
    const bool vec = op.in % VEC == 0;
    const int n_stages = (u1 - u0 + per - 1) / per;
    for (int s = warp; s < n_stages; s += PERSIST_CONSUMER_WARPS) {
        const unsigned idx = stage + s, slot = idx % PERSIST_SLOTS;
        PERSIST_PROF_LAP(PROF_DOT);
        mbar_wait(&rb.full[slot], (idx / PERSIST_SLOTS) & 1);
        PERSIST_PROF_LAP(PROF_FULL);
        const unsigned char* base = ring + rb.offset[slot];
        const int s0 = u0 + s * per, rows = min(per, u1 - s0) * op.nr;
        float* out = ys + (s0 - u0) * op.nr;
        int r = 0;
#ifdef PERSIST_SKIP_DOT  // timing experiments only: the stream without the arithmetic (wrong sums)
        r = rows;
#endif
        for (; r + 4 <= rows; r += 4) persist_dots<T, 4>(base + (long)r * rs, rs, xs, op.in, vec, lane, out + r);
        if (r + 2 <= rows) {
            persist_dots<T, 2>(base + (long)r * rs, rs, xs, op.in, vec, lane, out + r);
            r += 2;
        }
        if (r < rows) persist_dots<T, 1>(base + (long)r * rs, rs, xs, op.in, vec, lane, out + r);
        __syncwarp();
        if (lane == 0) mbar_arrive(&rb.empty[slot]);
    }
    stage += n_stages;
    PERSIST_PROF_LAP(PROF_DOT);
    persist_consumers_sync();
    PERSIST_PROF_LAP(PROF_SYNC);
    for (int i = threadIdx.x; i < u1 - u0; i += PERSIST_CONSUMERS) op.store(u0 + i, ys + i * op.nr);
    PERSIST_PROF_LAP(PROF_EPILOGUE);
}

// One virtual block of each other op kind: the kernel's arguments from the table, in its entry's
// order.
#define PTR(i, type) ((type)a[i])
#define INT(i) ((int)a[i])
template <typename T, bool ATTENTION>
__device__ __forceinline__ void persist_other(int kind, const u64* a, const PersistentGrid& g) {
    switch (kind) {
    case PERSIST_EMBEDDING:
        embedding_residual_fwd<T>(g, PTR(0, float*), PTR(1, const u32*), PTR(2, const T*), (long)a[3], INT(4), INT(5));
        break;
    case PERSIST_SCAN_STEP:
        mamba_scan_step_fwd<T>(g, PTR(0, T*), PTR(1, float*), PTR(2, const T*), PTR(3, const T*), PTR(4, const T*),
                               INT(5), PTR(6, const T*), PTR(7, const T*), PTR(8, const T*), PTR(9, const T*),
                               INT(10), INT(11), INT(12));
        break;
    case PERSIST_POSITIONS: positions_advance_body(g, PTR(0, int*), INT(1), INT(2)); break;
#if PERSIST_HALVES == 1  // its shared arrays serve one virtual block at a time (the host checks)
    case PERSIST_ATTENTION:
        if constexpr (ATTENTION)
            attention_decode_fwd<T>(g, PTR(0, T*), PTR(1, float*), PTR(2, unsigned*), PTR(3, const T*), PTR(4, T*),
                                PTR(5, T*), PTR(6, const int*), INT(7), INT(8), INT(9), INT(10), INT(11), INT(12));
        break;
#endif
    default: break;  // the host records only the kinds above
    }
}
#undef PTR
#undef INT

// Dynamic shared memory: xs [xs_bytes] (the input row), ys [ys_floats] (a block's sums of one op),
// then the ring [ring_bytes]; every part 16-byte aligned.
template <typename T, bool ATTENTION>
__device__ void decode_persistent(const u64* ops, int n_ops, u64* count, u64 base, int poll_ns, int xs_bytes,
                                  int ys_floats, int ring_bytes) {
    extern __shared__ __align__(16) unsigned char persist_smem[];
    __shared__ PersistRing rb;
    __shared__ float scratch[32];
    T* xs = reinterpret_cast<T*>(persist_smem);
    float* ys = reinterpret_cast<float*>(persist_smem + xs_bytes);
    unsigned char* ring = persist_smem + xs_bytes + 4 * ys_floats;
    if (threadIdx.x == 0) {
        persist_sync.count = count;
        persist_sync.base = base;
        persist_sync.passed = 0;
        persist_sync.poll_ns = poll_ns;
        for (int s = 0; s < PERSIST_SLOTS; ++s) {
            mbar_init(&rb.full[s], 1);
            mbar_init(&rb.empty[s], 1);
        }
#ifdef PERSIST_PROFILE
        for (int p = 0; p < PROF_PARTS; ++p) persist_prof[p] = 0;
#endif
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x >= PERSIST_CONSUMERS) {
        persist_produce<T>(ops, n_ops, ring, (unsigned)ring_bytes, rb);
#ifdef PERSIST_PROFILE
        asm volatile("bar.sync 15, %0;" ::"n"(PERSIST_THREADS) : "memory");
#endif
        return;
    }
    unsigned stage = 0;
    for (int k = 0; k < n_ops; ++k) {
        const u64* d = ops + (long)k * PERSIST_OP_WORDS;
        const int kind = (int)d[0];
        if (PersistDense<T>::is_dense(kind)) {
            persist_consume<T>(PersistDense<T>(kind, d + 4), k, stage, ring, rb, xs, ys, scratch);
            continue;
        }
        PersistentGrid g;
        g.dim.x = (unsigned)d[1];
        g.dim.y = (unsigned)d[2];
        g.dim.z = (unsigned)d[3];
        g.op = k;
        const long n = (long)g.dim.x * g.dim.y * g.dim.z;
        // Both halves of the consumers pass the barrier here (the bodies' own wait() then returns
        // at once), then each runs every other virtual block.
        PERSIST_PROF_START;
        persist_pass(k);
        PERSIST_PROF_LAP(PROF_PASS);
        for (long v = (long)PERSIST_HALVES * blockIdx.x + threadIdx.x / PERSIST_VBLOCK; v < n;
             v += (long)PERSIST_HALVES * gridDim.x) {
            g.blk.x = (unsigned)(v % g.dim.x);
            g.blk.y = (unsigned)((v / g.dim.x) % g.dim.y);
            g.blk.z = (unsigned)(v / ((long)g.dim.x * g.dim.y));
            persist_other<T, ATTENTION>(kind, d + 4, g);
        }
        PERSIST_PROF_LAP(PROF_OTHER);
    }
    PERSIST_PROF_START;
    persist_pass(n_ops - 1);
    PERSIST_PROF_LAP(PROF_PASS);
#ifdef PERSIST_PROFILE
    asm volatile("bar.sync 15, %0;" ::"n"(PERSIST_THREADS) : "memory");  // the producer's parts are in
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        const long long* p = persist_prof;
        printf("PERSIST_PROFILE ops %d cycles pass %lld input %lld full %lld dot %lld sync %lld epilogue %lld other %lld "
               "empty %lld issue %lld\n",
               n_ops, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
    }
#endif
}

// sm_90 and later (the host checks the compute capability); for older targets the entries trap.
// The _attention entries also run the decoding attention (compiled in, it costs the dense phases
// registers: ptxas -v, 224 bytes of spills at 166 registers against none).
#define PERSIST_ARGS \
    const u64 *ops, int n_ops, u64 *count, u64 base, int poll_ns, int xs_bytes, int ys_floats, int ring_bytes
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PERSIST_RUN(T, attention) \
    decode_persistent<T, attention>(ops, n_ops, count, base, poll_ns, xs_bytes, ys_floats, ring_bytes)
#else
#define PERSIST_RUN(T, attention) __trap()
#endif
#define PERSIST_LAUNCH __launch_bounds__(PERSIST_THREADS, PERSIST_MIN_BLOCKS)
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_f32(PERSIST_ARGS) { PERSIST_RUN(float, false); }
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_bf16(PERSIST_ARGS) { PERSIST_RUN(bf16_t, false); }
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_attention_f32(PERSIST_ARGS) { PERSIST_RUN(float, true); }
extern "C" __global__ void PERSIST_LAUNCH decode_persistent_attention_bf16(PERSIST_ARGS) { PERSIST_RUN(bf16_t, true); }
