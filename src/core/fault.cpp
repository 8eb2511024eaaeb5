#include "core/fault.hpp"

#include <algorithm>
#include <mutex>
#include <vector>

namespace aiopt::fault {

namespace {

std::mutex mutex;
std::vector<std::string> open_faults;

}  // namespace

bool active(std::string_view name) {
  std::lock_guard lock(mutex);
  return std::find(open_faults.begin(), open_faults.end(), name) != open_faults.end();
}

Scope::Scope(std::string name) : name_(std::move(name)) {
  std::lock_guard lock(mutex);
  open_faults.push_back(name_);
}

Scope::~Scope() {
  std::lock_guard lock(mutex);
  const auto it = std::find(open_faults.begin(), open_faults.end(), name_);
  if (it != open_faults.end()) open_faults.erase(it);
}

}  // namespace aiopt::fault
