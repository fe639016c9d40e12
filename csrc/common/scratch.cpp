#include "scratch.h"

#include <atomic>
#include <mutex>
#include <set>

namespace pyseq {
namespace {

std::atomic<int64_t> limit{kDefaultScratchLimit};
std::atomic<int64_t> kept{0};

// One thread's buffers. The mutex is taken by its own thread on every request (uncontended) and by
// release_scratch from any thread.
struct ThreadBuffers {
  std::mutex mutex;
  at::Tensor slots[3];

  void release_locked() {
    for (at::Tensor& t : slots) {
      if (t.defined()) kept -= t.nbytes();
      t.reset();
    }
  }
};

std::mutex registry_mutex;
std::set<ThreadBuffers*>& registry() {
  static std::set<ThreadBuffers*>* threads = new std::set<ThreadBuffers*>();  // outlives thread-exit destructors
  return *threads;
}

// Registers the calling thread's buffers while the thread lives.
struct Registration {
  ThreadBuffers buffers;
  Registration() {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry().insert(&buffers);
  }
  ~Registration() {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry().erase(&buffers);
    std::lock_guard<std::mutex> own(buffers.mutex);
    buffers.release_locked();
  }
};

}  // namespace

at::Tensor scratch(Scratch slot, std::initializer_list<int64_t> sizes, const at::TensorOptions& options) {
  thread_local Registration registration;
  ThreadBuffers& mine = registration.buffers;
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const int64_t bytes = numel * static_cast<int64_t>(options.dtype().itemsize());
  std::lock_guard<std::mutex> lock(mine.mutex);
  at::Tensor& buffer = mine.slots[static_cast<int>(slot)];
  if (buffer.defined() && buffer.numel() >= numel && buffer.dtype() == options.dtype()) {
    return buffer.narrow(0, 0, numel).view(sizes);
  }
  const int64_t old_bytes = buffer.defined() ? static_cast<int64_t>(buffer.nbytes()) : 0;
  if (kept.load() - old_bytes + bytes > limit.load()) return at::empty(sizes, options);
  kept += bytes - old_bytes;
  buffer = at::empty({numel}, options);
  return buffer.view(sizes);
}

void set_scratch_limit(int64_t bytes) {
  TORCH_CHECK_VALUE(bytes >= 0, "the scratch limit must be non-negative, got ", bytes);
  limit = bytes;
}

int64_t scratch_limit() { return limit.load(); }

int64_t scratch_bytes() { return kept.load(); }

void release_scratch() {
  std::lock_guard<std::mutex> lock(registry_mutex);
  for (ThreadBuffers* t : registry()) {
    std::lock_guard<std::mutex> own(t->mutex);
    t->release_locked();
  }
}

}  // namespace pyseq
