// Stand-in for cooperative_groups.h in the emulation build: the grid group of a cooperative launch (see ../emulation.h).
#pragma once
#include "../emulation.h"

namespace cooperative_groups {

class grid_group {
 public:
  // Every thread of the grid waits here until all have arrived (an error outside a cooperative launch).
  void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
    ::pyseq_emulation::grid_sync(file, line);
  }
};

inline grid_group this_grid() { return grid_group(); }

}  // namespace cooperative_groups
