// The CUDA emulator (see emulation.h): every GPU thread of a launch is a fiber with its own stack; a scheduler on the
// launching thread runs the fibers in rounds, each fiber until it waits (at a barrier, a warp intrinsic or a grid
// synchronisation) or exits, in the order of the schedule; a wait ends when every thread it waits for has arrived.
#include "emulation.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "introspection.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define PYSEQ_EMULATION_ASAN 1
#endif

// Fibers switch by a few instructions of x86-64 assembly, or through ucontext (the portable fallback, ~15x slower;
// PYSEQ_EMULATION_UCONTEXT forces it, for its test).
#if defined(__x86_64__) && !defined(PYSEQ_EMULATION_UCONTEXT)
#define PYSEQ_EMULATION_X86_64_SWITCH 1
#else
#include <ucontext.h>
#endif

// ---- fibers: a stack and a saved context each ---------------------------------------------------------------------

#if defined(PYSEQ_EMULATION_X86_64_SWITCH)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the stack pointer in
// *save, and resumes the context whose stack pointer is `next` (a fiber's first resume enters fiber_entry with the
// fiber in rbx).
extern "C" void pyseq_emulation_switch(void** save, void* next);
extern "C" void pyseq_emulation_fiber_entry();
extern "C" __attribute__((visibility("hidden"), noreturn)) void pyseq_emulation_fiber_main(void* fiber);
asm(R"(
  .text
  .p2align 4
  .globl pyseq_emulation_switch
  .hidden pyseq_emulation_switch
  .type pyseq_emulation_switch, @function
pyseq_emulation_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size pyseq_emulation_switch, .-pyseq_emulation_switch

  .p2align 4
  .globl pyseq_emulation_fiber_entry
  .hidden pyseq_emulation_fiber_entry
  .type pyseq_emulation_fiber_entry, @function
pyseq_emulation_fiber_entry:
  movq %rbx, %rdi
  call pyseq_emulation_fiber_main
  ud2
  .size pyseq_emulation_fiber_entry, .-pyseq_emulation_fiber_entry
)");
#else
extern "C" __attribute__((noreturn)) void pyseq_emulation_fiber_main(void* fiber);
#endif

namespace pyseq_emulation {

ThreadCoordinates* current = nullptr;

namespace {

constexpr unsigned kWarp = 32;
constexpr int kMultiprocessors = 8;  // the emulated device: a small GPU, so that cooperative grids reach its limit
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxThreadsPerMultiprocessor = 2048;
constexpr int kMaxBlocksPerMultiprocessor = 32;
constexpr int kDefaultSharedPerBlock = 48 * 1024;
constexpr int kMaxSharedPerBlockOptin = 227 * 1024;
constexpr int kSharedPerMultiprocessor = 228 * 1024;
#if defined(PYSEQ_EMULATION_ASAN)
constexpr size_t kStackBytes = 1 << 20;
#else
constexpr size_t kStackBytes = 256 << 10;
#endif

struct Context {
#if defined(PYSEQ_EMULATION_X86_64_SWITCH)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  void* fake_stack = nullptr;  // AddressSanitizer's bookkeeping of the context's stack
  const void* bottom = nullptr;
  size_t size = 0;
};

// Stacks are mapped once and reused by later launches (a guard page below each).
class StackPool {
 public:
  char* take() {
    if (!free_.empty()) {
      char* s = free_.back();
      free_.pop_back();
#if defined(PYSEQ_EMULATION_ASAN)
      __asan_unpoison_memory_region(s, kStackBytes);
#endif
      return s;
    }
    const size_t page = 4096;
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("pyseq CUDA emulation: out of memory for thread stacks");
    mprotect(p, page, PROT_NONE);
    return static_cast<char*>(p) + page;
  }
  void give(char* s) { free_.push_back(s); }

 private:
  std::vector<char*> free_;
};

enum class State { Ready, Barrier, Warp, Grid, Exited };

struct Fiber {
  ThreadCoordinates coords;
  Context context;
  char* stack = nullptr;
  unsigned block = 0;  // index in Launch::blocks
  unsigned tid = 0;    // linear thread index in the block
  State state = State::Ready;
  const char* file = "";
  int line = 0;
  // a warp intrinsic in progress
  WarpOp op = WarpOp::Sync;
  unsigned mask = 0;
  int operand = 0, width = 0;
  size_t size = 0;
  unsigned char value[16];
  void* result = nullptr;
  unsigned ready_round = 0;  // made ready during this round: runs from the next one
};

struct Block {
  uint3 idx;
  unsigned first = 0, count = 0;  // its fibers in Launch::fibers
  unsigned live = 0, exited = 0, at_barrier = 0;
  const char* barrier_file = "";
  int barrier_line = 0;
  std::vector<unsigned char> dynamic_shared;
  std::vector<unsigned> waiting;       // per warp: the lanes waiting at a warp intrinsic
  std::vector<unsigned> exited_lanes;  // per warp: the lanes that have exited
};

enum class Order { Forward, Reverse, Random };

struct Schedule {
  Order order = Order::Forward;
  uint64_t state = 0;  // the random order's generator
  uint32_t next() {    // splitmix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return static_cast<uint32_t>((z ^ (z >> 31)) >> 32);
  }
};

struct Launch {
  const char* name = "";
  dim3 grid, block;
  bool cooperative = false;
  KernelBody body = nullptr;
  void* call = nullptr;
  size_t dynamic_bytes = 0;
  std::vector<Block> blocks;  // the blocks running now: one, or the whole grid of a cooperative launch
  std::vector<Fiber> fibers;
  unsigned ready = 0;  // fibers in State::Ready
  unsigned round = 0;
  unsigned grid_live = 0, grid_exited = 0, grid_at_sync = 0;
  const char* grid_file = "";
  int grid_line = 0;
  Schedule schedule;
  std::string fault;
  Context main;
};

std::mutex launch_mutex;  // one launch at a time: the fibers of a launch run on the thread that launched it
Launch* launch_now = nullptr;
Fiber* running = nullptr;
StackPool stacks;
cudaError_t last_error = cudaSuccess;
std::map<const void*, int> shared_limits;  // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel
std::set<std::string> launched;

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, fmt);
  vsnprintf(buffer, sizeof buffer, fmt, args);
  va_end(args);
  return buffer;
}

// "thread (x,y,z) of block (x,y,z)" (a plain array: a fault abandons the fiber's frames without destroying them)
struct Where {
  char text[96];
};
Where where(const Fiber& f) {
  const ThreadCoordinates& c = f.coords;
  Where w;
  snprintf(w.text, sizeof w.text, "thread (%u,%u,%u) of block (%u,%u,%u)", c.thread_idx.x, c.thread_idx.y,
           c.thread_idx.z, c.block_idx.x, c.block_idx.y, c.block_idx.z);
  return w;
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync: return "__syncwarp";
    case WarpOp::ShuffleIndex: return "__shfl_sync";
    case WarpOp::ShuffleUp: return "__shfl_up_sync";
    case WarpOp::ShuffleDown: return "__shfl_down_sync";
    case WarpOp::ShuffleXor: return "__shfl_xor_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::Ballot: return "__ballot_sync";
  }
  return "?";
}

bool is_shuffle(WarpOp op) {
  return op == WarpOp::ShuffleIndex || op == WarpOp::ShuffleUp || op == WarpOp::ShuffleDown ||
         op == WarpOp::ShuffleXor;
}

// ---- context switches -------------------------------------------------------------------------------------------

void switch_context(Context& from, Context& to, bool from_exits) {
#if defined(PYSEQ_EMULATION_ASAN)
  __sanitizer_start_switch_fiber(from_exits ? nullptr : &from.fake_stack, to.bottom, to.size);
#else
  (void)from_exits;
#endif
#if defined(PYSEQ_EMULATION_X86_64_SWITCH)
  pyseq_emulation_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
#if defined(PYSEQ_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(from.fake_stack, nullptr, nullptr);
#endif
}

#if !defined(PYSEQ_EMULATION_X86_64_SWITCH)
void ucontext_entry(unsigned high, unsigned low) {
  pyseq_emulation_fiber_main(reinterpret_cast<void*>((static_cast<uintptr_t>(high) << 32) | low));
}
#endif

void start_fiber(Fiber& f) {
  f.stack = stacks.take();
  f.context.bottom = f.stack;
  f.context.size = kStackBytes;
#if defined(PYSEQ_EMULATION_X86_64_SWITCH)
  // The frame pyseq_emulation_switch pops: MXCSR and the x87 control word, r15, r14, r13, r12, rbx (the fiber), rbp,
  // and the return address, fiber_entry, which then runs with a 16-byte aligned stack.
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kStackBytes) & ~uintptr_t(15);
  uint64_t* frame = reinterpret_cast<uint64_t*>(top - 16 - 64);
  uint32_t control[2];
  asm volatile("stmxcsr %0" : "=m"(control[0]));
  asm volatile("fnstcw %0" : "=m"(control[1]));
  std::memcpy(&frame[0], control, sizeof control);
  frame[1] = frame[2] = frame[3] = frame[4] = 0;  // r15..r12
  frame[5] = reinterpret_cast<uint64_t>(&f);      // rbx
  frame[6] = 0;                                   // rbp
  frame[7] = reinterpret_cast<uint64_t>(&pyseq_emulation_fiber_entry);
  f.context.sp = frame;
#else
  getcontext(&f.context.uc);
  f.context.uc.uc_stack.ss_sp = f.stack;
  f.context.uc.uc_stack.ss_size = kStackBytes;
  f.context.uc.uc_link = nullptr;
  const uintptr_t p = reinterpret_cast<uintptr_t>(&f);
  makecontext(&f.context.uc, reinterpret_cast<void (*)()>(&ucontext_entry), 2, static_cast<unsigned>(p >> 32),
              static_cast<unsigned>(p));
#endif
}

// ---- waiting and faults (called on a fiber) ---------------------------------------------------------------------

void yield() { switch_context(running->context, launch_now->main, false); }

// Ends the launch with an error: the message goes to the launching thread, which throws it; this fiber never resumes.
[[noreturn]] void fault(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void fault(const char* fmt, ...) {
  char message[1024];
  va_list args;
  va_start(args, fmt);
  vsnprintf(message, sizeof message, fmt, args);
  va_end(args);
  launch_now->fault = message;
  switch_context(running->context, launch_now->main, true);
  __builtin_unreachable();
}

Block& block_of(const Fiber& f) { return launch_now->blocks[f.block]; }
Fiber& fiber_at(const Block& b, unsigned tid) { return launch_now->fibers[b.first + tid]; }

void make_ready(Fiber& f) {
  f.state = State::Ready;
  f.ready_round = launch_now->round;
  ++launch_now->ready;
}

void thread_exits(Fiber& f) {
  Launch& L = *launch_now;
  Block& b = block_of(f);
  f.state = State::Exited;
  --b.live;
  ++b.exited;
  --L.grid_live;
  ++L.grid_exited;
  if (b.at_barrier > 0) {
    fault("%s exited while %u threads of its block wait at __syncthreads() at %s:%d: a barrier that only "
          "some threads of the block reach",
          where(f).text, b.at_barrier, b.barrier_file, b.barrier_line);
  }
  if (L.grid_at_sync > 0) {
    fault("%s exited while %u threads wait at grid.sync() at %s:%d", where(f).text, L.grid_at_sync,
          L.grid_file, L.grid_line);
  }
  const unsigned warp = f.tid / kWarp, lane = f.tid % kWarp;
  b.exited_lanes[warp] |= 1u << lane;
  for (unsigned w = b.waiting[warp]; w != 0; w &= w - 1) {
    const unsigned l = static_cast<unsigned>(__builtin_ctz(w));
    const Fiber& g = fiber_at(b, warp * kWarp + l);
    if (g.mask >> lane & 1) {
      fault("%s exited while lane %u waits for it at %s at %s:%d (mask 0x%08x)", where(f).text, l,
            op_name(g.op), g.file, g.line, g.mask);
    }
  }
}

}  // namespace

}  // namespace pyseq_emulation

extern "C" void pyseq_emulation_fiber_main(void* p) {
  using namespace pyseq_emulation;
  Fiber& f = *static_cast<Fiber*>(p);
#if defined(PYSEQ_EMULATION_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &launch_now->main.bottom, &launch_now->main.size);
#endif
  launch_now->body(launch_now->call);
  thread_exits(f);
  switch_context(f.context, launch_now->main, true);
  __builtin_unreachable();
}

namespace pyseq_emulation {

unsigned char* dynamic_shared() { return launch_now->blocks[running->block].dynamic_shared.data(); }

void static_shared_here(const char* file, int line) {
  if (launch_now->cooperative && launch_now->blocks.size() > 1) {
    fault("static __shared__ variable at %s:%d in a cooperative kernel: its blocks run interleaved here and "
          "would share it; use PYSEQ_DYNAMIC_SHARED",
          file, line);
  }
}

void syncthreads(const char* file, int line) {
  Fiber& f = *running;
  Block& b = block_of(f);
  if (b.exited > 0) {
    fault("%s reached __syncthreads() at %s:%d after %u threads of its block exited: a barrier that only some "
          "threads of the block reach",
          where(f).text, file, line, b.exited);
  }
  if (b.at_barrier > 0 && (b.barrier_line != line || std::strcmp(b.barrier_file, file) != 0)) {
    fault("%s reached __syncthreads() at %s:%d while %u threads of its block wait at __syncthreads() at "
          "%s:%d: a barrier that only some threads of the block reach",
          where(f).text, file, line, b.at_barrier, b.barrier_file, b.barrier_line);
  }
  f.state = State::Barrier;
  f.file = file;
  f.line = line;
  b.barrier_file = file;
  b.barrier_line = line;
  if (++b.at_barrier == b.live) {
    b.at_barrier = 0;
    for (unsigned t = 0; t < b.count; ++t) {
      if (fiber_at(b, t).state == State::Barrier) make_ready(fiber_at(b, t));
    }
  }
  yield();
}

void grid_sync(const char* file, int line) {
  Launch& L = *launch_now;
  Fiber& f = *running;
  if (!L.cooperative) {
    fault("%s called grid.sync() at %s:%d in a kernel not launched cooperatively", where(f).text, file,
          line);
  }
  if (L.grid_exited > 0) {
    fault("%s reached grid.sync() at %s:%d after %u threads of the grid exited", where(f).text, file, line,
          L.grid_exited);
  }
  f.state = State::Grid;
  f.file = file;
  f.line = line;
  L.grid_file = file;
  L.grid_line = line;
  if (++L.grid_at_sync == L.grid_live) {
    L.grid_at_sync = 0;
    for (Fiber& g : L.fibers) {
      if (g.state == State::Grid) make_ready(g);
    }
  }
  yield();
}

namespace {

// The lane lane reads in a shuffle, or -1 when it keeps its own value.
int shuffle_source(WarpOp op, unsigned lane, int operand, int width) {
  const int l = static_cast<int>(lane), first = l - l % width;
  switch (op) {
    case WarpOp::ShuffleIndex: return first + ((operand % width) + width) % width;
    case WarpOp::ShuffleUp: return l % width - operand < 0 ? -1 : l - operand;
    case WarpOp::ShuffleDown: return l % width + operand >= width ? -1 : l + operand;
    case WarpOp::ShuffleXor: {
      const int source = l ^ operand;
      return source >= first + width || source >= static_cast<int>(kWarp) ? -1 : source;
    }
    default: return -1;
  }
}

// Every lane of mask has arrived at the same intrinsic: each gets its result and goes on.
void complete_warp_op(Block& b, unsigned warp, unsigned mask) {
  const Fiber& first = fiber_at(b, warp * kWarp + static_cast<unsigned>(__builtin_ctz(mask)));
  const WarpOp op = first.op;
  unsigned any = 0, all = 1, ballot = 0;
  if (!is_shuffle(op) && op != WarpOp::Sync) {
    for (unsigned m = mask; m != 0; m &= m - 1) {
      const unsigned l = static_cast<unsigned>(__builtin_ctz(m));
      const bool p = fiber_at(b, warp * kWarp + l).value[0] != 0;
      any |= p;
      all &= p;
      ballot |= static_cast<unsigned>(p) << l;
    }
  }
  for (unsigned m = mask; m != 0; m &= m - 1) {
    const unsigned l = static_cast<unsigned>(__builtin_ctz(m));
    Fiber& g = fiber_at(b, warp * kWarp + l);
    if (is_shuffle(op)) {
      const int source = shuffle_source(op, l, g.operand, g.width);
      const unsigned s = source < 0 ? l : static_cast<unsigned>(source);
      if (!(mask >> s & 1)) {
        fault("%s at %s:%d: lane %u reads lane %u, which is not in the mask 0x%08x", op_name(op), g.file,
              g.line, l, s, mask);
      }
      std::memcpy(g.result, fiber_at(b, warp * kWarp + s).value, g.size);
    } else if (op != WarpOp::Sync) {
      const unsigned r = op == WarpOp::Any ? any : op == WarpOp::All ? all : ballot;
      std::memcpy(g.result, &r, sizeof r);
    }
    make_ready(g);
  }
  b.waiting[warp] &= ~mask;
}

}  // namespace

void warp_exchange(WarpOp op, unsigned mask, const void* value, size_t size, int operand, int width, void* result,
                   const char* file, int line) {
  Fiber& f = *running;
  Block& b = block_of(f);
  const unsigned warp = f.tid / kWarp, lane = f.tid % kWarp;
  const unsigned lanes = std::min(kWarp, b.count - warp * kWarp);
  const unsigned present = lanes == kWarp ? ~0u : (1u << lanes) - 1;
  if (!(mask >> lane & 1)) {
    fault("%s at %s:%d: %s (lane %u) is not in its mask 0x%08x", op_name(op), file, line, where(f).text,
          lane, mask);
  }
  if (mask & ~present) {
    fault("%s at %s:%d: the mask 0x%08x names lanes that this warp of %u threads does not have", op_name(op),
          file, line, mask, lanes);
  }
  if (is_shuffle(op) && (width < 1 || width > static_cast<int>(kWarp) || (width & (width - 1)) != 0)) {
    fault("%s at %s:%d: width %d is not a power of two up to 32", op_name(op), file, line, width);
  }
  if (mask & b.exited_lanes[warp]) {
    fault("%s at %s:%d (%s): the mask 0x%08x names lane %d, which has exited", op_name(op), file, line, where(f).text,
          mask, __builtin_ctz(mask & b.exited_lanes[warp]));
  }
  f.op = op;
  f.mask = mask;
  f.operand = operand;
  f.width = width;
  f.size = size;
  if (size > 0) std::memcpy(f.value, value, size);
  f.result = result;
  f.file = file;
  f.line = line;
  f.state = State::Warp;
  for (unsigned w = b.waiting[warp]; w != 0; w &= w - 1) {
    const unsigned l = static_cast<unsigned>(__builtin_ctz(w));
    const Fiber& g = fiber_at(b, warp * kWarp + l);
    const bool differ = g.op != op || g.mask != mask || g.size != size || g.width != width;
    if (((g.mask >> lane & 1) || (mask >> l & 1)) && differ) {
      fault("the lanes of a warp diverge: lane %u at %s at %s:%d (mask 0x%08x), lane %u at %s at %s:%d (mask "
            "0x%08x)",
            lane, op_name(op), file, line, mask, l, op_name(g.op), g.file, g.line, g.mask);
    }
  }
  b.waiting[warp] |= 1u << lane;
  if ((b.waiting[warp] & mask) == mask) complete_warp_op(b, warp, mask);
  yield();
}

unsigned vote(WarpOp op, unsigned mask, bool predicate, const char* file, int line) {
  const unsigned char p = predicate;
  unsigned result = 0;
  warp_exchange(op, mask, &p, 1, 0, static_cast<int>(kWarp), &result, file, line);
  return result;
}

namespace {

// ---- the scheduler (on the launching thread) ----------------------------------------------------------------------

Schedule read_schedule() {
  const char* text = std::getenv("PYSEQ_CUDA_EMULATION_SCHEDULE");
  Schedule s;
  const std::string v = text ? text : "";
  if (v.empty() || v == "forward") return s;
  if (v == "reverse") {
    s.order = Order::Reverse;
    return s;
  }
  if (v.rfind("random:", 0) == 0 && v.size() > 7) {
    char* end = nullptr;
    const unsigned long long seed = std::strtoull(v.c_str() + 7, &end, 10);
    if (*end == '\0') {
      s.order = Order::Random;
      s.state = seed;
      return s;
    }
  }
  throw std::invalid_argument("PYSEQ_CUDA_EMULATION_SCHEDULE must be forward, reverse or random:SEED (SEED an "
                              "unsigned integer), got '" + v + "'");
}

std::string deadlock_report(const Launch& L) {
  std::string report = "deadlock: no thread can go on;";
  for (const Block& b : L.blocks) {
    for (unsigned t = 0; t < b.count; ++t) {
      const Fiber& f = L.fibers[b.first + t];
      if (f.state == State::Exited) continue;
      const char* what = f.state == State::Barrier ? "__syncthreads()"
                         : f.state == State::Grid  ? "grid.sync()"
                                                   : op_name(f.op);
      report += format(" %s waits at %s at %s:%d;", where(f).text, what, f.file, f.line);
      if (report.size() > 2000) return report + " ...";
    }
  }
  return report;
}

// Runs L.blocks' fibers to their end (or to a fault).
void run_blocks(Launch& L) {
  unsigned threads = 0;
  for (Block& b : L.blocks) {
    b.first = threads;
    b.count = L.block.x * L.block.y * L.block.z;
    b.live = b.count;
    b.exited = b.at_barrier = 0;
    b.dynamic_shared.assign(L.dynamic_bytes, 0xff);  // NaN bytes: a read before a write shows
    b.waiting.assign((b.count + kWarp - 1) / kWarp, 0);
    b.exited_lanes.assign((b.count + kWarp - 1) / kWarp, 0);
    threads += b.count;
  }
  L.fibers.assign(threads, Fiber());
  L.grid_live = threads;
  L.grid_exited = L.grid_at_sync = 0;
  for (unsigned k = 0; k < L.blocks.size(); ++k) {
    const Block& b = L.blocks[k];
    for (unsigned t = 0; t < b.count; ++t) {
      Fiber& f = L.fibers[b.first + t];
      f.block = k;
      f.tid = t;
      f.coords.thread_idx = {t % L.block.x, t / L.block.x % L.block.y, t / (L.block.x * L.block.y)};
      f.coords.block_idx = b.idx;
      f.coords.block_dim = L.block;
      f.coords.grid_dim = L.grid;
      start_fiber(f);
    }
  }
  L.round = 0;
  L.ready = threads;
  // Each round runs the fibers that were ready when it began, in the schedule's order: by block, then by thread
  // (reversed, or both shuffled anew each round).
  std::vector<unsigned> order(threads);
  for (unsigned i = 0; i < threads; ++i) order[i] = L.schedule.order == Order::Reverse ? threads - 1 - i : i;
  std::vector<unsigned> block_order(L.blocks.size());
  while (L.fault.empty()) {
    if (L.ready == 0) {
      if (L.grid_live > 0) L.fault = deadlock_report(L);
      break;
    }
    ++L.round;
    if (L.schedule.order == Order::Random) {
      for (unsigned k = 0; k < block_order.size(); ++k) block_order[k] = k;
      for (size_t i = block_order.size(); i > 1; --i) std::swap(block_order[i - 1], block_order[L.schedule.next() % i]);
      unsigned* next = order.data();
      for (unsigned k : block_order) {
        const Block& b = L.blocks[k];
        unsigned* first = next;
        for (unsigned t = 0; t < b.count; ++t) *next++ = b.first + t;
        for (unsigned i = b.count; i > 1; --i) std::swap(first[i - 1], first[L.schedule.next() % i]);
      }
    }
    for (unsigned i : order) {
      Fiber& f = L.fibers[i];
      if (f.state != State::Ready || f.ready_round >= L.round) continue;
      --L.ready;
      running = &f;
      current = &f.coords;
      switch_context(L.main, f.context, false);
      if (!L.fault.empty()) break;
    }
  }
  for (Fiber& f : L.fibers) stacks.give(f.stack);
  running = nullptr;
  current = nullptr;
}

int shared_limit(const void* kernel) {
  const auto it = shared_limits.find(kernel);
  return it == shared_limits.end() ? kDefaultSharedPerBlock : it->second;
}

int occupancy(const void* kernel, int block_threads, size_t shared_bytes) {
  if (block_threads <= 0 || block_threads > kMaxThreadsPerBlock ||
      shared_bytes > static_cast<size_t>(shared_limit(kernel))) {
    return 0;
  }
  int blocks = std::min(kMaxBlocksPerMultiprocessor, kMaxThreadsPerMultiprocessor / block_threads);
  if (shared_bytes > 0) blocks = std::min<int>(blocks, static_cast<int>(kSharedPerMultiprocessor / shared_bytes));
  return blocks;
}

cudaError_t configuration_error(dim3 grid, dim3 block, size_t shared_bytes, const void* kernel, bool cooperative) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > kMaxThreadsPerBlock ||
      block.z > 64 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    return cudaErrorInvalidConfiguration;
  }
  if (shared_bytes > static_cast<size_t>(shared_limit(kernel))) return cudaErrorInvalidValue;
  if (cooperative && static_cast<uint64_t>(grid.x) * grid.y * grid.z >
                         static_cast<uint64_t>(occupancy(kernel, static_cast<int>(threads), shared_bytes)) *
                             kMultiprocessors) {
    return cudaErrorCooperativeLaunchTooLarge;
  }
  return cudaSuccess;
}

// "... [with auto Kernel = pyseq::{anonymous}::ctc_alpha_kernel<float>]" -> "ctc_alpha_kernel"
std::string base_name(const char* pretty) {
  std::string s = pretty;
  const size_t eq = s.rfind(" = ");
  if (eq != std::string::npos) s = s.substr(eq + 3);
  if (!s.empty() && s.back() == ']') s.pop_back();
  const size_t angle = s.find('<');
  if (angle != std::string::npos) s = s.substr(0, angle);
  const size_t colon = s.rfind("::");
  return colon == std::string::npos ? s : s.substr(colon + 2);
}

}  // namespace

cudaError_t run(const char* kernel_name, const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes,
                bool cooperative, KernelBody body, void* call) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  const cudaError_t error = configuration_error(grid, block, dynamic_shared_bytes, kernel, cooperative);
  if (error != cudaSuccess) {
    last_error = error;
    return error;
  }
  Launch L;
  L.name = kernel_name;
  L.grid = grid;
  L.block = block;
  L.cooperative = cooperative;
  L.body = body;
  L.call = call;
  L.dynamic_bytes = dynamic_shared_bytes;
  L.schedule = read_schedule();
  launched.insert(base_name(kernel_name));
  std::vector<uint3> order;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) order.push_back({x, y, z});
    }
  }
  launch_now = &L;
  if (cooperative) {
    for (const uint3& idx : order) {
      L.blocks.emplace_back();
      L.blocks.back().idx = idx;
    }
    run_blocks(L);
  } else {
    // Blocks run one after another (they cannot wait for each other), in the schedule's order.
    if (L.schedule.order == Order::Reverse) std::reverse(order.begin(), order.end());
    if (L.schedule.order == Order::Random) {
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[L.schedule.next() % i]);
    }
    L.blocks.resize(1);
    for (const uint3& idx : order) {
      L.blocks[0].idx = idx;
      run_blocks(L);
      if (!L.fault.empty()) break;
    }
  }
  launch_now = nullptr;
  if (!L.fault.empty()) {
    throw std::runtime_error("pyseq CUDA emulation: kernel " + base_name(kernel_name) + ": " + L.fault);
  }
  return cudaSuccess;
}

std::vector<std::string> launched_kernels() {
  std::lock_guard<std::mutex> lock(launch_mutex);
  return {launched.begin(), launched.end()};
}

void forget_launched_kernels() {
  std::lock_guard<std::mutex> lock(launch_mutex);
  launched.clear();
}

}  // namespace pyseq_emulation

// ---- the runtime API ----------------------------------------------------------------------------------------------

using namespace pyseq_emulation;

cudaError_t cudaGetLastError() {
  std::lock_guard<std::mutex> lock(launch_mutex);
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  std::lock_guard<std::mutex> lock(launch_mutex);
  return last_error;
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorCooperativeLaunchTooLarge: return "too many blocks in cooperative launch";
  }
  return "unknown error";
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 0;  // no CUDA runtime: the emulator
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  switch (attribute) {
    case cudaDevAttrMaxThreadsPerBlock: *value = kMaxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = kDefaultSharedPerBlock; break;
    case cudaDevAttrWarpSize: *value = static_cast<int>(kWarp); break;
    case cudaDevAttrMultiProcessorCount: *value = kMultiprocessors; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = kMaxThreadsPerMultiprocessor; break;
    case cudaDevAttrCooperativeLaunch: *value = 1; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = kMaxSharedPerBlockOptin; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attribute, int value) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > kMaxSharedPerBlockOptin) {
    last_error = cudaErrorInvalidValue;
    return cudaErrorInvalidValue;
  }
  shared_limits[kernel] = value;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel, int block_threads,
                                                          size_t dynamic_shared_bytes) {
  std::lock_guard<std::mutex> lock(launch_mutex);
  *blocks = occupancy(kernel, block_threads, dynamic_shared_bytes);
  return cudaSuccess;
}
