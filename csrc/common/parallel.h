// Splitting a batch over the CPU threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace pyseq {

// The batch is split into a fixed number of chunks, one per thread, so that per-chunk sums are added in the same
// order on every run (deterministic gradients).
inline int64_t chunk_count(int64_t B) { return std::max<int64_t>(1, std::min<int64_t>(B, at::get_num_threads())); }

// Runs body(b0, b1, chunk) over the chunks of [0, B) in parallel.
template <typename F>
void for_each_chunk(int64_t B, const F& body) {
  const int64_t chunks = chunk_count(B);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) body(c * B / chunks, (c + 1) * B / chunks, c);
  });
}

}  // namespace pyseq
