#pragma once
// The report's "context" block (docs/report-format.md): what built aiopt and what it ran on, so
// that a number can be interpreted and reproduced. The CLI adds what only it knows (argv, seed,
// start time).
#include <nlohmann/json.hpp>

namespace aiopt {

// Fields: aiopt_version, git_commit, build_type, compiler, cuda_compiler (null without CUDA),
// cuda_architectures [string], sanitizers, cpu {model, vendor, cores {logical, physical}, isa
// [string], caches {l1d_bytes, l2_bytes, l3_bytes}, memory_bytes}, blas {name, core, config,
// threads, env {OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, OMP_NUM_THREADS: string or null}},
// threads, load_average [1, 5, 15 minutes] and busy_cores (cores other processes kept busy over
// 100 ms; each null where the OS does not say; both read before the probes), peaks
// {host_copy_gbs, host_triad_gbs, host_sgemm_gflops, host_bandwidth_array_bytes,
// host_sgemm_size} (only with_probes), cuda {built, runtime_version, driver_version (e.g.
// 13000), unavailable_reason (null when a device is usable)}, devices [{index, name, sm "9.0",
// multiprocessors, memory_bytes, l2_bytes, peak_bandwidth_gbs, and with_probes
// measured_copy_gbs (null when the probe failed, with probe_error)}], hostname, os.
// with_probes runs (or reuses) the peaks:: probes: well under a second per device.
nlohmann::ordered_json machine_context(bool with_probes);

}  // namespace aiopt
