#include "report/metric.hpp"

namespace aiopt {

std::string to_string(Better better) { return better == Better::higher ? "higher" : "lower"; }

}  // namespace aiopt
