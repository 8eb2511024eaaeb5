#pragma once
// Which memory level a run's working set fits: the reading a roofline fraction needs. The
// bandwidth peak is measured streaming from DRAM (the triad, or a GPU's device copy), so a step
// whose working set fits a cache reads it faster than that peak, and its fraction exceeds 1.
// On a host with a 260 MiB L3, a 4096 × 14336 int8 weight matrix (56 MiB) stays in L3 from one
// decode GEMV to the next.
#include <cstddef>
#include <string>
#include <vector>

#include "core/device.hpp"

namespace aiopt {

struct MemoryLevel {
  std::string name;        // "L1d", "L2", "L3" or "DRAM"
  std::size_t bytes = 0;   // one cache of that level (per core for L1d and L2), or the memory
};

// The levels of `device`, smallest first, ending with DRAM: the host's L1d, L2 and L3 as the OS
// reports them (a level it does not report is left out), or a GPU's L2; then the memory.
std::vector<MemoryLevel> memory_levels(const Device& device);

// The first of `levels` that holds `working_set_bytes`; the last (DRAM) when none does.
// A single core's cache is compared whatever the thread count: the whole working set has to
// stay there for a step to run from it.
MemoryLevel fitting_level(double working_set_bytes, const std::vector<MemoryLevel>& levels);

}  // namespace aiopt
