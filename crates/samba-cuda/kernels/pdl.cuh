// Programmatic dependent launch (sm_90+), for the kernels of a decoding step. The host launches
// them with the programmatic-stream-serialization attribute (src/ops/pdl.rs), so a kernel may
// start while the kernel before it on the stream is still finishing:
//
//   kernel N+1:  read constant data (weights)      overlaps the end of kernel N
//                pdl_wait()                        returns once kernel N has completed and its
//                                                  writes are visible
//                pdl_trigger()                     kernel N+2 may now be launched
//                read and write everything else
//
// Triggering after the wait keeps at most two kernels of the chain resident at once, so data
// written by any earlier kernel is complete when a kernel starts reading it after its wait.
// Launched without the attribute (or before sm_90) both are no-ops and the stream orders
// kernels as usual.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The grid a kernel body runs in: its block, the grid's size, the block's threads and their
// barrier, and the wait for the kernels before it. A kernel launched on its own passes KernelGrid
// (blockIdx, gridDim, blockDim, __syncthreads, pdl_wait); the persistent decoding kernel
// (decode_persistent.cu) runs the same bodies as virtual blocks of one long-lived grid beside a
// producer warp: its threads are a part of the block, and its wait is a grid-wide barrier.
struct KernelGrid {
    __device__ __forceinline__ uint3 block() const { return blockIdx; }
    __device__ __forceinline__ uint3 size() const {
        uint3 s;
        s.x = gridDim.x;
        s.y = gridDim.y;
        s.z = gridDim.z;
        return s;
    }
    // The threads of a block that run the body, this thread's index among them, and their barrier
    // (the persistent kernel runs a body's blocks beside a producer warp).
    __device__ __forceinline__ unsigned threads() const { return blockDim.x; }
    __device__ __forceinline__ unsigned thread() const { return threadIdx.x; }
    __device__ __forceinline__ void sync() const { __syncthreads(); }
    __device__ __forceinline__ void wait() const {
        pdl_wait();
        pdl_trigger();
    }
};
