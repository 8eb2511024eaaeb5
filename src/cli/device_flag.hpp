#pragma once
// The --device flag of the commands that run the model.
#include <string>

#include "core/device.hpp"

namespace aiopt::cli {

// "cpu", "cuda" or "cuda:N", with the GPU present; InputError otherwise.
Device parse_device(const std::string& text);

}  // namespace aiopt::cli
