// The CUDA emulation: pyseq's CUDA kernel files compiled as C++ and run on the CPU, each GPU thread of a block a fiber
// with its own stack (emulator.cpp), so that the real kernels, their launch sizes and the glue that prepares their
// arguments are tested on machines without a GPU (make cuda-emulate).
//
// This header is force-included (g++ -x c++ -D__CUDACC__ -include emulation.h) ahead of every *_cuda.cu file, next to
// the stand-in cuda_runtime.h, cooperative_groups.h, cuda_bf16.h and cuda_fp16.h of include/. __CUDA_ARCH__ stays
// undefined: shared headers take their host paths.
//
// What runs as on a device: thread, block and grid indexing (three dimensions), __syncthreads (a barrier that only
// some threads of a block reach is an error naming the file and line), __syncwarp, the warp shuffles and votes (masks
// checked: the caller in the mask, the lanes it names alive, the lane it reads in the mask), atomics, static and
// dynamic shared memory (dynamic shared memory filled with NaN bytes at each launch and limited to 48 KiB unless
// raised with cudaFuncSetAttribute), cooperative launches with grid synchronisation (a grid larger than can be
// co-resident is an error, as on the device), launch errors through cudaGetLastError.
//
// Threads switch only at barriers, warp intrinsics and grid.sync(): between two such points a thread runs alone, in
// the order of the schedule PYSEQ_CUDA_EMULATION_SCHEDULE=forward|reverse|random:SEED (read at each launch). A kernel
// whose result depends on that order is missing a barrier; threads that wait for each other at different barriers
// or intrinsics are reported as a deadlock. Not modelled: timing, memory coalescing, races within one barrier
// interval (no two threads run at once), the memory model beyond that, global memory bounds (ASan sees heap overruns
// in a sanitizer build), __launch_bounds__ (not checked against the launch), registers and occupancy beyond threads
// and shared memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict
// Static shared memory: one copy of each variable, which the blocks of a launch share in turn (they run one after
// another). Blocks of a cooperative launch run interleaved, so there a kernel with static shared memory is an error.
// Static shared variables start at zero and are not refilled between launches (dynamic shared memory is).
#define __shared__                                          \
  ::pyseq_emulation::static_shared_here(__FILE__, __LINE__); \
  static

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorCooperativeLaunchTooLarge = 720,
};
typedef cudaError_t cudaError;
struct CUstream_st;
typedef CUstream_st* cudaStream_t;

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxThreadsPerMultiProcessor = 39,
  cudaDevAttrCooperativeLaunch = 95,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

constexpr int warpSize = 32;

// ---- the runtime API the kernel files and the glue call ------------------------------------------------------------

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device);
cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attribute, int value);
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel, int block_threads,
                                                          size_t dynamic_shared_bytes);
template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attribute, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attribute, value);
}
template <typename F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, F* kernel, int block_threads,
                                                          size_t dynamic_shared_bytes) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, reinterpret_cast<const void*>(kernel), block_threads,
                                                       dynamic_shared_bytes);
}

namespace pyseq_emulation {

// The coordinates of the running thread (the emulator points `current` at the running fiber's).
struct ThreadCoordinates {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
extern ThreadCoordinates* current;

unsigned char* dynamic_shared();
void static_shared_here(const char* file, int line);

void syncthreads(const char* file, int line);
void grid_sync(const char* file, int line);

enum class WarpOp : int { Sync, ShuffleIndex, ShuffleUp, ShuffleDown, ShuffleXor, Any, All, Ballot };
// One lane's part in a warp-wide operation: it waits until every lane of `mask` has arrived, then gets its result.
// Shuffles exchange up to 16 bytes; votes and the ballot use `predicate`.
void warp_exchange(WarpOp op, unsigned mask, const void* value, size_t size, int operand, int width, void* result,
                   const char* file, int line);

template <typename T>
T shuffle(WarpOp op, unsigned mask, T value, int operand, int width, const char* file, int line) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 16, "shuffled values are up to 16 bytes");
  T result;
  warp_exchange(op, mask, &value, sizeof(T), operand, width, &result, file, line);
  return result;
}

unsigned vote(WarpOp op, unsigned mask, bool predicate, const char* file, int line);

using KernelBody = void (*)(void* call);

// Runs a launch: body(call) in every thread of the grid. The launch errors of the device (a bad configuration, too
// much shared memory, a cooperative grid that cannot be co-resident) are returned and kept for cudaGetLastError;
// what the device would fault or hang on (a barrier some threads miss, a bad mask, a deadlock) throws.
cudaError_t run(const char* kernel_name, const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes,
                bool cooperative, KernelBody body, void* call);

// The pretty name of the function template instance for kernel K: carries K's name and template arguments.
template <auto Kernel>
const char* kernel_name() {
  return __PRETTY_FUNCTION__;
}

template <typename F>
struct KernelParams;
template <typename... P>
struct KernelParams<void (*)(P...)> {
  using tuple = std::tuple<std::decay_t<P>...>;
};

// Launches Kernel with args converted to its parameter types: each thread calls it with its own copies.
template <auto Kernel, typename... Args>
cudaError_t launch(dim3 grid, dim3 block, size_t dynamic_shared_bytes, bool cooperative, Args&&... args) {
  using Params = typename KernelParams<decltype(Kernel)>::tuple;
  const Params params(std::forward<Args>(args)...);
  const KernelBody body = [](void* call) { std::apply(Kernel, *static_cast<const Params*>(call)); };
  return run(kernel_name<Kernel>(), reinterpret_cast<const void*>(Kernel), grid, block, dynamic_shared_bytes,
             cooperative, body, const_cast<Params*>(&params));
}

}  // namespace pyseq_emulation

#define threadIdx (::pyseq_emulation::current->thread_idx)
#define blockIdx (::pyseq_emulation::current->block_idx)
#define blockDim (::pyseq_emulation::current->block_dim)
#define gridDim (::pyseq_emulation::current->grid_dim)

// ---- device functions: each records its call site for the emulator's messages -----------------------------------

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::pyseq_emulation::syncthreads(file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::pyseq_emulation::warp_exchange(::pyseq_emulation::WarpOp::Sync, mask, nullptr, 0, 0, warpSize, nullptr, file,
                                   line);
}
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) {
  return ::pyseq_emulation::shuffle(::pyseq_emulation::WarpOp::ShuffleIndex, mask, var, src_lane, width, file, line);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, const char* file = __builtin_FILE(),
                 int line = __builtin_LINE()) {
  return ::pyseq_emulation::shuffle(::pyseq_emulation::WarpOp::ShuffleUp, mask, var, static_cast<int>(delta), width,
                                    file, line);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, const char* file = __builtin_FILE(),
                   int line = __builtin_LINE()) {
  return ::pyseq_emulation::shuffle(::pyseq_emulation::WarpOp::ShuffleDown, mask, var, static_cast<int>(delta),
                                    width, file, line);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) {
  return ::pyseq_emulation::shuffle(::pyseq_emulation::WarpOp::ShuffleXor, mask, var, lane_mask, width, file, line);
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<int>(::pyseq_emulation::vote(::pyseq_emulation::WarpOp::Any, mask, predicate != 0, file, line));
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<int>(::pyseq_emulation::vote(::pyseq_emulation::WarpOp::All, mask, predicate != 0, file, line));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return ::pyseq_emulation::vote(::pyseq_emulation::WarpOp::Ballot, mask, predicate != 0, file, line);
}

// Atomics: threads never run at once, so a read-modify-write is atomic as it stands.
namespace pyseq_emulation {
template <typename T, typename F>
T read_modify_write(T* address, F f) {
  const T old = *address;
  *address = f(old);
  return old;
}
}  // namespace pyseq_emulation

template <typename T>
T atomicAdd(T* address, T value) {
  return ::pyseq_emulation::read_modify_write(address, [value](T x) { return x + value; });
}
template <typename T>
T atomicSub(T* address, T value) {
  return ::pyseq_emulation::read_modify_write(address, [value](T x) { return x - value; });
}
template <typename T>
T atomicOr(T* address, T value) {
  return ::pyseq_emulation::read_modify_write(address, [value](T x) { return x | value; });
}
template <typename T>
T atomicAnd(T* address, T value) {
  return ::pyseq_emulation::read_modify_write(address, [value](T x) { return x & value; });
}
template <typename T>
T atomicMax(T* address, T value) {
  return ::pyseq_emulation::read_modify_write(address, [value](T x) { return x < value ? value : x; });
}
template <typename T>
T atomicMin(T* address, T value) {
  return ::pyseq_emulation::read_modify_write(address, [value](T x) { return value < x ? value : x; });
}
template <typename T>
T atomicExch(T* address, T value) {
  return ::pyseq_emulation::read_modify_write(address, [value](T) { return value; });
}
template <typename T>
T atomicCAS(T* address, T compare, T value) {
  return ::pyseq_emulation::read_modify_write(address, [compare, value](T x) { return x == compare ? value : x; });
}
