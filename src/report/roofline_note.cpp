#include "report/roofline_note.hpp"

#include <map>
#include <set>

#include "report/number_text.hpp"

namespace aiopt {

namespace {

// Per technique, the parameters whose values differ between its results: what tells its rows
// apart (all of quantization's thirteen would bury the note).
std::map<std::string, std::set<std::string>> varying_params(const std::vector<Result>& results) {
  std::map<std::string, ojson> first;
  std::map<std::string, std::set<std::string>> varying;
  for (const auto& r : results) {
    const auto [it, added] = first.emplace(r.technique, r.params);
    varying[r.technique];
    if (added) continue;
    for (const auto& [name, v] : r.params.items())
      if (!it->second.contains(name) || it->second[name] != v) varying[r.technique].insert(name);
    for (const auto& [name, v] : it->second.items())
      if (!r.params.contains(name)) varying[r.technique].insert(name);
  }
  return varying;
}

// "quantization/int8_dynamic (cpu; n=14336)"
std::string label(const Result& r, const std::set<std::string>& shown) {
  std::string text = r.technique + "/" + r.variant + " (" + r.device;
  std::string params;
  for (const auto& [name, v] : r.params.items())
    if (shown.count(name)) params += " " + name + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  return text + (params.empty() ? "" : ";" + params) + ")";
}

std::string bandwidth_reason(const Result& r) {
  const bool host = r.device == "cpu";
  const std::string peak = host ? "the peak is DRAM's (the triad probe)"
                                : "the peak is device memory's (a device-to-device copy)";
  const std::string rerun = "rerun with --flush-cache to measure from memory";
  if (!r.working_set) return peak + ", and data that stays in a cache between steps is read faster; " + rerun;
  const WorkingSet& w = *r.working_set;
  const std::string set = "the working set (" + byte_text(static_cast<double>(w.bytes)) + ")";
  if (w.fits == "DRAM")
    return set + " fits no cache, yet the step read memory faster than the " +
           (host ? "triad probe" : "copy probe") +
           ", which measured the peak once per process (a busier moment or fewer threads lower it)";
  const std::string fits = set + " fits " + w.fits + " (" + byte_text(static_cast<double>(w.level_bytes)) + ")";
  if (w.cache_flushed)
    return "the caches were flushed before each sample, but " + fits +
           ", so what a step reads more than once comes from there, while " + peak;
  return fits + ", while " + peak + "; " + rerun;
}

// The reasons of a result's fractions above 1, or "" when none is.
std::string reasons(const Result& r) {
  std::string text;
  auto add = [&text](const Metric& m, const std::string& why) {
    text += (text.empty() ? "" : "; ") + m.name + " " + printed("%.3g", m.value) + " > 1: " + why;
  };
  if (const Metric* m = r.metric("bandwidth_fraction"); m && m->value > 1) add(*m, bandwidth_reason(r));
  if (const Metric* m = r.metric("compute_fraction"); m && m->value > 1)
    add(*m, "the peak is the host's fp32 SGEMM; products in narrower types (int8, fp16, bf16) do more "
            "operations per cycle, and the probe's one 1024^3 product, measured once per process, can "
            "read below a run's own larger fp32 products");
  return text;
}

}  // namespace

std::vector<std::string> roofline_notes(const Report& report) {
  const auto varying = varying_params(report.results);
  std::vector<std::string> notes;
  for (const auto& r : report.results) {
    if (r.status != Status::ok) continue;
    const std::string why = reasons(r);
    if (!why.empty()) notes.push_back(label(r, varying.at(r.technique)) + ": " + why);
  }
  return notes;
}

}  // namespace aiopt
