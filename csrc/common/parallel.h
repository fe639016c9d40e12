// Splitting work over the CPU threads. Independent work goes through at::parallel_for (torch's thread pool, torch's
// thread count); the two helpers here add what it lacks: a split of batch reductions that does not depend on the
// thread count, and a team of threads that stays together for a whole recurrence and meets once per step.
#pragma once

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

namespace pyseq {

// Sums over the batch (the gradients of shared parameters) are formed per chunk of the batch and the chunk sums added
// in chunk order. The chunks are fixed by B alone, never by the thread count, so that the result has the same bits
// on any number of threads; there are enough of them to keep kReductionChunks threads busy.
constexpr int64_t kReductionChunks = 32;
inline int64_t chunk_count(int64_t B) { return std::max<int64_t>(1, std::min<int64_t>(B, kReductionChunks)); }

// The first batch entry of chunk c (c = chunk_count(B) gives B).
inline int64_t chunk_begin(int64_t c, int64_t B) { return c * B / chunk_count(B); }

// Runs body(c0, c1) over ranges of chunks in parallel; chunks [c0, c1) hold batch entries [chunk_begin(c0, B),
// chunk_begin(c1, B)).
template <typename F>
void for_each_chunk_range(int64_t B, const F& body) {
  at::parallel_for(0, chunk_count(B), 1, body);
}

// Runs body(b0, b1, chunk) over the chunks of [0, B) in parallel.
template <typename F>
void for_each_chunk(int64_t B, const F& body) {
  for_each_chunk_range(B, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) body(chunk_begin(c, B), chunk_begin(c + 1, B), c);
  });
}

// The barrier of a thread team: the threads spin on a generation counter (a pause between reads, a yield after a
// while, for a machine with more threads than cores), which costs a few tens of nanoseconds against ~300 for an
// OpenMP barrier on this machine's two cores; a recurrence meets once per step, hundreds of times per call.
class TeamBarrier {
 public:
  explicit TeamBarrier(int threads) : threads_(threads) {}

  void wait() {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == threads_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);  // publishes the reset count with it
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < kSpinsBeforeYield) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static constexpr int kSpinsBeforeYield = 1 << 14;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
  const int threads_;
};

namespace detail {
inline thread_local TeamBarrier* team_barrier_of_thread = nullptr;
}

// Runs body(thread, threads) on `threads` threads at once, a team that lives for the whole call, so that a
// recurrence can split each step over the team and meet at team_barrier() between steps (at::parallel_for would
// start and join its threads at every step). One thread runs body(0, 1) without starting a team. The team may
// come out smaller than asked (an OpenMP runtime inside another parallel region): body gets the real size.
template <typename F>
void on_thread_team(int threads, const F& body) {
  if (threads <= 1) {
    body(0, 1);
    return;
  }
  std::unique_ptr<TeamBarrier> barrier;
#pragma omp parallel num_threads(threads)
  {
#pragma omp single
    barrier = std::make_unique<TeamBarrier>(omp_get_num_threads());  // the end of `single` is a barrier
    detail::team_barrier_of_thread = barrier.get();
    body(omp_get_thread_num(), omp_get_num_threads());
    detail::team_barrier_of_thread = nullptr;
  }
}

// Waits until every thread of the team has arrived; called by all of them from inside on_thread_team's body (a
// team of one has nothing to wait for).
inline void team_barrier() {
  if (TeamBarrier* barrier = detail::team_barrier_of_thread) barrier->wait();
}

}  // namespace pyseq
