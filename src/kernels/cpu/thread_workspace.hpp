#pragma once
// Tasks handed out to the OpenMP threads one at a time as threads free up, for tasks whose work
// differs (the tiles of causal attention), each thread working in its own slice of one workspace.
#include <omp.h>

#include <algorithm>
#include <cstddef>

#include "core/memory.hpp"
#include "core/threads.hpp"

namespace aiopt::kernels::cpu {

// A slice's size in floats rounded up to whole cache lines, so that no two threads share one.
inline std::size_t whole_lines(std::size_t floats) {
  constexpr std::size_t per_line = memory::host_alignment / sizeof(float);
  return (floats + per_line - 1) / per_line * per_line;
}

// task(t, slice) for t in [0, tasks) on min(threads(), tasks) threads, where slice is the running
// thread's own per_thread floats (a whole_lines size).
template <class Task>
void over_tasks_in_workspace(std::size_t tasks, std::size_t per_thread, const Task& task) {
  const int workers = static_cast<int>(std::min<std::size_t>(threads(), tasks));
  memory::Buffer<float> workspace(Device::cpu(), per_thread * static_cast<std::size_t>(workers));
#pragma omp parallel num_threads(workers)
  {
    float* const slice = workspace.data() + per_thread * static_cast<std::size_t>(omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
    for (std::size_t t = 0; t < tasks; ++t) task(t, slice);
  }
}

}  // namespace aiopt::kernels::cpu
