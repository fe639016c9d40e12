// The CUDA emulator's own tests (run by tests/test_cuda_emulator.py): kernels written for them, compiled as in the
// emulation build, checked under each schedule. `emulator_selftest` runs every check and exits non-zero on a failure;
// `emulator_selftest oob` writes past a kernel's dynamic shared memory (AddressSanitizer's build must stop there).
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cuda_launch.h"

using pyseq::launch_cooperative_kernel;
using pyseq::launch_kernel;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL %s\n", what.c_str());
    ++failures;
  }
}

// Runs f, expecting the emulator to throw a message that contains `expected`.
void check_fault(const std::function<void()>& f, const std::string& expected, const std::string& what) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    check(message.find(expected) != std::string::npos, what + ": message was: " + message);
    return;
  }
  check(false, what + ": no fault");
}

const char* kSchedules[] = {"forward", "reverse", "random:1", "random:2"};

// ---- kernels -------------------------------------------------------------------------------------------------------

__global__ void coordinates_kernel(unsigned* out) {
  const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const unsigned i = block * blockDim.x * blockDim.y * blockDim.z + thread;
  out[4 * i] = threadIdx.x + 10 * threadIdx.y + 100 * threadIdx.z;
  out[4 * i + 1] = blockIdx.x + 10 * blockIdx.y + 100 * blockIdx.z;
  out[4 * i + 2] = blockDim.x + 10 * blockDim.y + 100 * blockDim.z;
  out[4 * i + 3] = gridDim.x + 10 * gridDim.y + 100 * gridDim.z;
}

// A tree sum over the block; with `barrier` false the tree's barrier is missing.
__global__ void block_sum_kernel(const float* x, float* out, bool barrier) {
  PYSEQ_DYNAMIC_SHARED(shared);
  float* buffer = reinterpret_cast<float*>(shared);
  buffer[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) buffer[threadIdx.x] += buffer[threadIdx.x + half];
    if (barrier) __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = buffer[0];
}

__global__ void barrier_in_branch_kernel(int* out) {
  if (threadIdx.x == 0) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void two_barriers_kernel(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void early_exit_kernel(int* out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_kernel(long long* out, int width) {
  const int lane = threadIdx.x % 32;
  const long long v = 1000 * lane + 7;
  long long* o = out + 4 * threadIdx.x;
  o[0] = __shfl_sync(0xffffffffu, v, 5, width);
  o[1] = __shfl_up_sync(0xffffffffu, v, 3, width);
  o[2] = __shfl_down_sync(0xffffffffu, v, 3, width);
  o[3] = __shfl_xor_sync(0xffffffffu, v, 9, width);
}

__global__ void vote_kernel(unsigned* out) {
  const int lane = threadIdx.x % 32;
  out[3 * threadIdx.x] = __any_sync(0xffffffffu, lane == 17);
  out[3 * threadIdx.x + 1] = __all_sync(0xffffffffu, lane < 31);
  out[3 * threadIdx.x + 2] = __ballot_sync(0xffffffffu, lane % 3 == 0);
  __syncwarp();
}

__global__ void half_warp_shuffle_kernel(float* out) {
  const int lane = threadIdx.x % 32;
  const unsigned mask = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  float v = static_cast<float>(lane);
  for (int offset = 8; offset > 0; offset /= 2) v += __shfl_down_sync(mask, v, offset, 16);
  out[threadIdx.x] = v;
}

__global__ void caller_not_in_mask_kernel(float* out) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, 1.0f, 0);
}

__global__ void exited_lane_kernel(float* out) {
  if (threadIdx.x % 32 == 31) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

__global__ void source_outside_mask_kernel(float* out) {
  if (threadIdx.x % 32 >= 16) return;
  out[threadIdx.x] = __shfl_down_sync(0x0000ffffu, 1.0f, 8, 32);  // lanes 8..15 read 16..23
}

__global__ void deadlock_kernel(float* out) {
  if (threadIdx.x < 32) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  }
  __syncthreads();
  if (threadIdx.x >= 32) out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 2.0f, 1);
  if (threadIdx.x < 32) __syncthreads();
}

__global__ void dynamic_shared_kernel(float* out) {
  PYSEQ_DYNAMIC_SHARED(shared);
  const float* x = reinterpret_cast<const float*>(shared);
  out[threadIdx.x] = x[threadIdx.x];  // read before any write
}

__global__ void out_of_bounds_kernel(float* out) {
  PYSEQ_DYNAMIC_SHARED(shared);
  float* x = reinterpret_cast<float*>(shared);
  x[threadIdx.x + 1] = 1.0f;  // one past the end for the last thread
  out[threadIdx.x] = x[threadIdx.x];
}

__global__ void atomic_kernel(int* count, unsigned long long* bits) {
  atomicAdd(count, 1);
  atomicOr(bits, 1ull << (threadIdx.x % 64));
}

// Block b writes its value, then (after the grid synchronises) reads the next block's.
__global__ void grid_exchange_kernel(int* slots, int* out, bool sync) {
  if (threadIdx.x == 0) slots[blockIdx.x] = static_cast<int>(blockIdx.x) + 1;
  if (sync) cooperative_groups::this_grid().sync();
  if (threadIdx.x == 0) out[blockIdx.x] = slots[(blockIdx.x + 1) % gridDim.x];
}

__global__ void static_shared_kernel(int* out) {
  __shared__ int value;
  if (threadIdx.x == 0) value = static_cast<int>(blockIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = value;
  cooperative_groups::this_grid().sync();
}

void set_schedule(const char* s) { setenv("PYSEQ_CUDA_EMULATION_SCHEDULE", s, 1); }

// ---- checks ----------------------------------------------------------------------------------------------------------

void coordinates() {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  std::vector<unsigned> out(4 * 12 * 24);
  launch_kernel<coordinates_kernel>(grid, block, 0, nullptr, out.data());
  bool ok = true;
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 2; ++tz)
          for (unsigned ty = 0; ty < 3; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx) {
              const unsigned i = ((bz * 2 + by) * 3 + bx) * 24 + (tz * 3 + ty) * 4 + tx;
              ok &= out[4 * i] == tx + 10 * ty + 100 * tz && out[4 * i + 1] == bx + 10 * by + 100 * bz &&
                    out[4 * i + 2] == 4 + 30 + 200 && out[4 * i + 3] == 3 + 20 + 200;
            }
  check(ok, "thread and block coordinates in three dimensions");
}

void barriers() {
  const int threads = 256, blocks = 3;
  std::vector<float> x(threads * blocks), out(blocks);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17);
  std::vector<float> expected(blocks, 0.0f);
  for (int b = 0; b < blocks; ++b) {
    launch_kernel<block_sum_kernel>(blocks, threads, threads * sizeof(float), nullptr, x.data(), out.data(), true);
    expected[b] = 0;
    for (int t = 0; t < threads; ++t) expected[b] += x[b * threads + t];
  }
  check(std::fabs(out[0] - expected[0]) < 1e-3f && std::fabs(out[2] - expected[2]) < 1e-3f, "a tree sum with barriers");
  // Without the barrier the result depends on the order the threads run in: some schedule must show it.
  bool differs = false;
  for (const char* s : kSchedules) {
    set_schedule(s);
    launch_kernel<block_sum_kernel>(blocks, threads, threads * sizeof(float), nullptr, x.data(), out.data(), false);
    differs |= std::fabs(out[0] - expected[0]) > 1e-3f;
  }
  check(differs, "a missing barrier changes the tree sum under some schedule");
}

void barrier_errors() {
  std::vector<int> out(64);
  check_fault([&] { launch_kernel<barrier_in_branch_kernel>(1, 64, 0, nullptr, out.data()); },
              "emulator_selftest.cu:", "a barrier inside if (threadIdx.x == 0)");
  check_fault([&] { launch_kernel<two_barriers_kernel>(1, 64, 0, nullptr, out.data()); },
              "a barrier that only some threads of the block reach", "two barriers of one block");
  check_fault([&] { launch_kernel<early_exit_kernel>(1, 64, 0, nullptr, out.data()); }, "exited",
              "a barrier after some threads exited");
}

void shuffles() {
  for (int width : {32, 16, 8}) {
    std::vector<long long> out(4 * 64);
    launch_kernel<shuffle_kernel>(1, 64, 0, nullptr, out.data(), width);
    bool ok = true;
    for (int t = 0; t < 64; ++t) {
      const int lane = t % 32, first = lane - lane % width;
      auto value = [](int l) { return 1000LL * l + 7; };
      const int up = lane % width >= 3 ? lane - 3 : lane;
      const int down = lane % width + 3 < width ? lane + 3 : lane;
      const int x = lane ^ 9;
      ok &= out[4 * t] == value(first + 5 % width);
      ok &= out[4 * t + 1] == value(up);
      ok &= out[4 * t + 2] == value(down);
      ok &= out[4 * t + 3] == value(x < first + width ? x : lane);
    }
    check(ok, "shuffles of 64-bit values, width " + std::to_string(width));
  }
  std::vector<float> sums(64);
  launch_kernel<half_warp_shuffle_kernel>(1, 64, 0, nullptr, sums.data());
  check(sums[0] == 120.0f && sums[16] == 376.0f && sums[48] == 376.0f, "two half warps with their own masks");
}

void votes() {
  std::vector<unsigned> out(3 * 64);
  launch_kernel<vote_kernel>(1, 64, 0, nullptr, out.data());
  unsigned ballot = 0;
  for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
  check(out[0] == 1 && out[1] == 0 && out[2] == ballot && out[3 * 40 + 2] == ballot, "__any/__all/__ballot_sync");
}

void mask_errors() {
  std::vector<float> out(64);
  check_fault([&] { launch_kernel<caller_not_in_mask_kernel>(1, 32, 0, nullptr, out.data()); }, "is not in its mask",
              "a caller outside its mask");
  check_fault([&] { launch_kernel<exited_lane_kernel>(1, 32, 0, nullptr, out.data()); }, "exited",
              "a mask naming an exited lane");
  check_fault([&] { launch_kernel<source_outside_mask_kernel>(1, 32, 0, nullptr, out.data()); },
              "which is not in the mask", "a shuffle reading a lane outside its mask");
  check_fault([&] { launch_kernel<deadlock_kernel>(1, 64, 0, nullptr, out.data()); }, "emulator_selftest.cu",
              "divergent barriers and shuffles");
}

void shared_memory() {
  std::vector<float> out(32, 0.0f);
  launch_kernel<dynamic_shared_kernel>(1, 32, 32 * sizeof(float), nullptr, out.data());
  check(std::isnan(out[0]) && std::isnan(out[31]), "dynamic shared memory starts as NaN");
  cudaGetLastError();
  launch_kernel<dynamic_shared_kernel>(1, 32, 64 * 1024, nullptr, out.data());
  check(cudaGetLastError() == cudaErrorInvalidValue, "64 KiB of dynamic shared memory without the attribute");
  check(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) ==
            cudaSuccess,
        "raising the dynamic shared memory limit");
  launch_kernel<dynamic_shared_kernel>(1, 32, 64 * 1024, nullptr, out.data());
  check(cudaGetLastError() == cudaSuccess, "64 KiB of dynamic shared memory with the attribute");
  launch_kernel<dynamic_shared_kernel>(1, 2048, 0, nullptr, out.data());
  check(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048 threads in a block");
  check(cudaGetLastError() == cudaSuccess, "cudaGetLastError clears the error");
}

void atomics() {
  int count = 0;
  unsigned long long bits = 0;
  launch_kernel<atomic_kernel>(5, 128, 0, nullptr, &count, &bits);
  check(count == 640 && bits == ~0ull, "atomicAdd and atomicOr");
}

void cooperative() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const int blocks = 2 * sms;
  for (const char* s : kSchedules) {
    set_schedule(s);
    std::vector<int> slots(blocks, 0), out(blocks, -1);
    check(launch_cooperative_kernel<grid_exchange_kernel>(blocks, 64, 0, nullptr, slots.data(), out.data(), true) ==
              cudaSuccess,
          "a cooperative launch");
    bool ok = true;
    for (int b = 0; b < blocks; ++b) ok &= out[b] == (b + 1) % blocks + 1;
    check(ok, std::string("grid.sync() orders the blocks' writes and reads, ") + s);
  }
  bool differs = false;
  for (const char* s : kSchedules) {
    set_schedule(s);
    std::vector<int> slots(blocks, 0), out(blocks, -1);
    launch_cooperative_kernel<grid_exchange_kernel>(blocks, 64, 0, nullptr, slots.data(), out.data(), false);
    for (int b = 0; b < blocks; ++b) differs |= out[b] != (b + 1) % blocks + 1;
  }
  check(differs, "without grid.sync() some schedule reads a value before it is written");
  set_schedule("forward");
  std::vector<int> slots(100000), out(100000);
  check(launch_cooperative_kernel<grid_exchange_kernel>(sms * 64 + 1, 32, 0, nullptr, slots.data(), out.data(),
                                                        true) == cudaErrorCooperativeLaunchTooLarge,
        "a cooperative grid larger than can be co-resident");
  cudaGetLastError();
  check_fault([&] { launch_kernel<grid_exchange_kernel>(2, 32, 0, nullptr, slots.data(), out.data(), true); },
              "not launched cooperatively", "grid.sync() in a kernel launched without cooperation");
  check_fault([&] { launch_cooperative_kernel<static_shared_kernel>(2, 32, 0, nullptr, out.data()); },
              "static __shared__", "static shared memory in a cooperative kernel");
}

void schedule_errors() {
  set_schedule("sideways");
  std::vector<int> out(64);
  try {
    launch_kernel<barrier_in_branch_kernel>(1, 1, 0, nullptr, out.data());
    check(false, "a bad schedule name is refused");
  } catch (const std::invalid_argument&) {
  }
  set_schedule("forward");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "oob") {
    std::vector<float> out(32);
    launch_kernel<out_of_bounds_kernel>(1, 32, 32 * sizeof(float), nullptr, out.data());
    std::printf("no fault\n");
    return 0;
  }
  for (const char* s : kSchedules) {
    set_schedule(s);
    coordinates();
    shuffles();
    votes();
    atomics();
  }
  set_schedule("forward");
  barriers();
  barrier_errors();
  mask_errors();
  shared_memory();
  cooperative();
  schedule_errors();
  if (failures == 0) std::printf("emulator self-test: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
