// Splitting work over the CPU threads. Independent work goes through at::parallel_for (torch's thread pool, torch's
// thread count); the two helpers here add what it lacks: a split of batch reductions that does not depend on the
// thread count, and a team of threads that stays together for a whole recurrence and meets once per step.
#pragma once

#include <ATen/Parallel.h>
#include <omp.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <climits>
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

// The barrier of a thread team: the threads spin on a generation counter with a pause between reads, which costs a
// few tens of nanoseconds against ~300 for an OpenMP barrier on two cores (a recurrence meets once per step, hundreds
// of times per call). A thread that has spun for a while yields, then sleeps on the counter (a futex) until the last
// one arrives: where the team shares its cores with other work, the spinning would take the time the others need.
class TeamBarrier {
 public:
  explicit TeamBarrier(int threads) : threads_(threads) {}

  void wait() {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == threads_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_seq_cst);  // publishes the reset count with it
      if (sleepers_.load(std::memory_order_seq_cst) > 0) wake_all();
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < kSpinsBeforeYield) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      } else if (spins < kSpinsBeforeSleep) {
        std::this_thread::yield();
      } else {
        // The last thread reads sleepers_ after publishing the generation, and this one reads the generation
        // after counting itself in (both sequentially consistent): either it sees this sleeper and wakes it, or
        // the futex finds the generation changed and does not sleep.
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        sleep_while(generation);
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      }
    }
  }

 private:
  void sleep_while(int generation) {
#if defined(__linux__)
    if (generation_.load(std::memory_order_seq_cst) == generation) {
      syscall(SYS_futex, reinterpret_cast<int*>(&generation_), FUTEX_WAIT_PRIVATE, generation, nullptr, nullptr, 0);
    }
#else
    std::this_thread::yield();
#endif
  }

  void wake_all() {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<int*>(&generation_), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
#endif
  }

  static constexpr int kSpinsBeforeYield = 1 << 11;
  static constexpr int kSpinsBeforeSleep = kSpinsBeforeYield + 64;
  static_assert(sizeof(std::atomic<int>) == sizeof(int), "the futex waits on the counter itself");
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
  std::atomic<int> sleepers_{0};
  const int threads_;
};

// The cores this process may run on: its CPU affinity, and its cgroup's CPU quota (a container limited to 2 CPUs on a
// 64-core host sees all 64, and torch's default thread count with them).
int usable_cores();

// Runs `rounds` rounds of two barriers on `threads` plain threads and counts the rounds in which a thread passed the
// first barrier before every thread had arrived at it (0 when the barrier is right). For the tests: more threads than
// cores exercise the yielding and sleeping waits.
int64_t team_barrier_check(int threads, int64_t rounds);

namespace detail {
inline thread_local TeamBarrier* team_barrier_of_thread = nullptr;
}

// Runs body(thread, threads) on `threads` threads at once, a team that lives for the whole call, so that a
// recurrence can split each step over the team and meet at team_barrier() between steps (at::parallel_for would
// start and join its threads at every step). One thread runs body(0, 1) without starting a team. The team has at
// most usable_cores() members (more would wait at every step for a core to run on), and may come out smaller still
// (an OpenMP runtime inside another parallel region): body gets the real size.
template <typename F>
void on_thread_team(int threads, const F& body) {
  if (threads > 1) threads = std::min(threads, usable_cores());  // (one thread, the common decoder step: no syscall)
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
