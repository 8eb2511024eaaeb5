#pragma once
// Why a roofline fraction above 1 is no error, said where the report is read: a note under the
// table and the Markdown for every ok result whose bandwidth_fraction or compute_fraction
// exceeds 1. The bandwidth peak streams from DRAM (the triad, or a GPU's device copy), so a
// working set that fits a cache beats it; the compute peak is an fp32 SGEMM's, which narrower
// types beat.
#include <string>
#include <vector>

#include "report/result.hpp"

namespace aiopt {

// One note per such result, in order, naming it by technique, variant, device and the
// parameters that differ between the technique's results:
// "quantization/int8_dynamic (cpu): bandwidth_fraction 3.2 > 1: the working set (56 MiB) fits L3
// (260 MiB), while the peak is DRAM's (the triad probe); rerun with --flush-cache to measure from
// memory".
std::vector<std::string> roofline_notes(const Report& report);

}  // namespace aiopt
