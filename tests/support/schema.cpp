#include "support/schema.hpp"

#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validator.hpp>

#include "support/files.hpp"

namespace aiopt::test {

std::vector<std::string> schema_errors(const nlohmann::json& doc, const std::string& definition) {
  static const nlohmann::json schema_doc =
      nlohmann::json::parse(read_text(AIOPT_SOURCE_DIR "/schemas/report.schema.json"));
  nlohmann::json schema_json = schema_doc;
  if (!definition.empty())
    schema_json = {{"definitions", schema_doc["definitions"]},
                   {"allOf", {{{"$ref", "#/definitions/" + definition}}}}};
  valijson::Schema schema;
  valijson::SchemaParser parser;
  valijson::adapters::NlohmannJsonAdapter schema_adapter(schema_json);
  parser.populateSchema(schema_adapter, schema);

  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter target(doc);
  std::vector<std::string> errors;
  if (!validator.validate(schema, target, &results)) {
    valijson::ValidationResults::Error e;
    while (results.popError(e)) {
      std::string where;
      for (const auto& part : e.context) where += part;
      errors.push_back(where + ": " + e.description);
    }
    if (errors.empty()) errors.push_back("invalid (valijson gave no detail)");
  }
  return errors;
}

}  // namespace aiopt::test
