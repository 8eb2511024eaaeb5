#include "report/result.hpp"

namespace aiopt {

std::string to_string(Status status) {
  switch (status) {
    case Status::ok: return "ok";
    case Status::skipped: return "skipped";
    case Status::failed: return "failed";
    case Status::interrupted: return "interrupted";
  }
  return "?";
}

const Metric* Result::metric(const std::string& name) const {
  for (const auto& m : metrics)
    if (m.name == name) return &m;
  return nullptr;
}

std::string CaseIdentity::key() const {
  return technique + "|" + variant + "|" + device + "|" + params.dump();
}

std::string CaseIdentity::case_key() const { return technique + "|" + device + "|" + params.dump(); }

}  // namespace aiopt
