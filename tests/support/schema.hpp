#pragma once
// Validation against the published report schema (schemas/report.schema.json) with valijson.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace aiopt::test {

// The schema errors of `doc`, against the whole schema or, when `definition` is given, against
// one of its definitions ("result", "jsonl_header", ...). Empty when `doc` is valid.
std::vector<std::string> schema_errors(const nlohmann::json& doc, const std::string& definition = "");

}  // namespace aiopt::test
