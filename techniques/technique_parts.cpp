#include "techniques/technique_parts.hpp"

#include <utility>

namespace aiopt {

namespace {

class PartsTechnique final : public Technique {
 public:
  explicit PartsTechnique(TechniqueParts parts) : parts_(std::move(parts)) {}

  std::string name() const override { return parts_.name; }
  std::string summary() const override { return parts_.summary(); }
  std::string trade_off() const override { return parts_.trade_off; }
  std::vector<ParamSpec> params() const override { return parts_.params(); }
  std::vector<Variant> variants() const override { return parts_.variants(); }

 protected:
  void check(const Case& c, DeviceKind device) const override { parts_.check(c, device); }
  std::unique_ptr<Run> start(const Case& c, const Device& device) const override { return parts_.start(c, device); }

 private:
  TechniqueParts parts_;
};

}  // namespace

std::unique_ptr<Technique> make_technique(TechniqueParts parts) {
  return std::make_unique<PartsTechnique>(std::move(parts));
}

}  // namespace aiopt
