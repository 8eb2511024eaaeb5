#pragma once
// dynamic_batching (TECHNIQUES.md §11): a stream of requests served by the model one at a time, in
// static or dynamic batches, or by iteration-level (continuous) batching through a paged KV cache;
// on the machine's clock or on a virtual clock driven by a step-cost model.
#include <memory>

#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "techniques/dynamic_batching/scheduler.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_dynamic_batching();

namespace dynamic_batching {

const VariantTable<Policy>& policies();

}  // namespace dynamic_batching
}  // namespace aiopt
