// The cores this process may run on (csrc/common/parallel.h).
#include "parallel.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace pyseq {
namespace {

// CPUs in the affinity mask (taskset, cpusets, a container's --cpuset-cpus); 0 where it cannot be read.
int affinity_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
#endif
  return 0;
}

// ceil(quota / period) of a cgroup limit, 0 for none.
int quota_cores(double quota, double period) {
  return quota > 0 && period > 0 ? std::max(1, static_cast<int>(std::ceil(quota / period))) : 0;
}

// The tightest CPU quota of this process's cgroup and its ancestors (a container's --cpus), 0 for none. cgroup v2:
// cpu.max ("max 100000" or "<quota> <period>") along the path in /proc/self/cgroup; v1: cpu.cfs_quota_us and
// cpu.cfs_period_us of the cpu controller's root as mounted in the container.
int cgroup_quota_cores() {
  int cores = 0;
  const auto tighten = [&cores](int c) {
    if (c > 0) cores = cores > 0 ? std::min(cores, c) : c;
  };
  std::string path;
  std::ifstream self("/proc/self/cgroup");
  for (std::string line; std::getline(self, line);) {
    if (line.rfind("0::", 0) == 0) path = line.substr(3);
  }
  while (true) {
    std::ifstream max("/sys/fs/cgroup" + path + "/cpu.max");
    std::string quota;
    double period = 0;
    if (max >> quota >> period && quota != "max") tighten(quota_cores(std::stod(quota), period));
    if (path.empty() || path == "/") break;
    path = path.substr(0, path.find_last_of('/'));
  }
  for (const std::string dir : {"/sys/fs/cgroup/cpu/", "/sys/fs/cgroup/cpu,cpuacct/"}) {
    std::ifstream quota_file(dir + "cpu.cfs_quota_us"), period_file(dir + "cpu.cfs_period_us");
    double quota = 0, period = 0;
    if (quota_file >> quota && period_file >> period) tighten(quota_cores(quota, period));
  }
  return cores;
}

}  // namespace

int usable_cores() {
  static const int quota = cgroup_quota_cores();  // fixed for the process; the affinity may change, and is cheap
  int cores = affinity_cores();
  if (cores <= 0) cores = static_cast<int>(std::thread::hardware_concurrency());
  if (quota > 0) cores = cores > 0 ? std::min(cores, quota) : quota;
  return std::max(1, cores);
}

int64_t team_barrier_check(int threads, int64_t rounds) {
  TORCH_CHECK_VALUE(threads >= 1 && rounds >= 0, "team_barrier_check takes threads >= 1 and rounds >= 0");
  TeamBarrier barrier(threads);
  std::atomic<int64_t> arrivals{0}, errors{0};
  std::vector<std::thread> team;
  for (int t = 0; t < threads; ++t) {
    team.emplace_back([&] {
      for (int64_t r = 0; r < rounds; ++r) {
        arrivals.fetch_add(1);
        barrier.wait();
        if (arrivals.load() != (r + 1) * threads) errors.fetch_add(1);
        barrier.wait();  // no thread starts the next round before every one has checked this one
      }
    });
  }
  for (std::thread& t : team) t.join();
  return errors.load();
}

}  // namespace pyseq
