#pragma once
// Sweeps: the value syntax of parameters ("16,32", "16-1024*2", "0-100+25"), experiments as
// axes over a technique's parameters, their validation against the technique, and their
// expansion into the ordered list of cases a run executes (docs/configs.md).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/device.hpp"
#include "harness/param.hpp"
#include "harness/technique.hpp"

namespace aiopt {

// One axis of a sweep: a parameter and the values it takes.
struct Axis {
  std::string name;
  std::vector<Value> values;
};

struct Experiment {
  std::string technique;
  std::vector<std::string> variants;   // empty: all variants of the technique
  std::vector<std::string> devices;    // "cpu", "cuda"; empty: the caller's default devices
  std::vector<Axis> axes;              // independent axes: cartesian product, in declared order
  std::vector<std::vector<Axis>> zips; // each group's axes advance together (equal lengths)
  std::string origin;                  // "file.yaml:12: experiment 1" or "--set", for messages
};

struct PlannedCase {
  Case c;
  DeviceKind device;
  bool baseline;
};

// What a parameter accepts, as messages quote it: "rows: int in [1, 1048576]",
// "chain: one of bias_gelu, layernorm, softmax".
std::string describe(const ParamSpec& spec);

// Parse one value list for `spec` from text as written after `key=` in --set or as a YAML
// scalar: "a,b,c" lists; ranges for numeric params: "16-1024*2" (16,32,...,1024: multiply) and
// "0-100+25" (0,25,...,100: add), as llama-bench; "true/false/1/0" for bools; choices checked.
// Throws InputError naming `where`, the key, the value and what is allowed.
std::vector<Value> parse_values(const ParamSpec& spec, std::string_view text, const std::string& where);

// Throws InputError unless `value` has the spec's type and lies within its bounds or choices.
void check_value(const ParamSpec& spec, const Value& value, const std::string& where);

// "key=v1,v2" from --set, validated against the technique's spec.
Axis parse_set(const Technique& t, std::string_view assignment);

// Name lookups that throw InputError naming `where`, the bad name, the closest valid one and
// all valid ones.
const Technique& find_technique(std::string_view name,
                                const std::vector<std::unique_ptr<Technique>>& techniques,
                                const std::string& where);
const ParamSpec& find_param(const std::vector<ParamSpec>& specs, std::string_view name,
                            const std::string& where);
Variant find_variant(const Technique& t, std::string_view name, const std::string& where);
DeviceKind parse_device(std::string_view name, const std::string& where);

// Validate an Experiment built in code (e.g. from bench flags) against its technique: known
// technique, variants and devices, each named once; known parameters, each on one axis only;
// no empty axis; typed values within bounds; equal lengths within a zip group; and, when
// devices are given, every asked variant runs on one of them.
void validate(const Experiment& e, const std::vector<std::unique_ptr<Technique>>& techniques);
void validate(const Experiment& e, const Technique& t);

// Expand: params not on an axis take the spec default (or quick_value when quick and set).
// Order: parameter combinations (axes in declared order, later axes fastest; zip groups after),
// then device (in `devices` order), then variant with the baseline first, so each baseline
// sits next to its variants. Variants that do not run on a device are left out for it.
// A baseline is always included when any of its variants is run, even if not asked for,
// because comparisons need it. Every case gets `seed`, so a baseline and its variants see the
// same inputs. Validates `e` first (InputError).
std::vector<PlannedCase> expand(const Experiment& e, const Technique& t, bool quick,
                                std::uint64_t seed, const std::vector<DeviceKind>& default_devices);

}  // namespace aiopt
