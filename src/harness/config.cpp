#include "harness/config.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/error.hpp"
#include "core/spelling.hpp"

namespace aiopt {

namespace {

using TechniqueList = std::vector<std::unique_ptr<Technique>>;

std::string kind_of(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar: return "a value";
    case YAML::NodeType::Sequence: return node.size() == 0 ? "an empty list" : "a list";
    case YAML::NodeType::Map: return node.size() == 0 ? "an empty mapping" : "a mapping";
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return "empty";
  }
  return "empty";
}

// One key of a mapping with its value; the key node keeps the line of `key:` for messages
// about a value that is empty (yaml-cpp marks an empty value at the next token).
struct Entry {
  std::string name;
  YAML::Node key;
  YAML::Node value;
};

// Reads one file's document tree into an ExperimentFile, checking every node against the
// schema in docs/configs.md and every name against the techniques. Each message starts with
// "path:line:" of the node at fault.
class FileReader {
 public:
  FileReader(std::string path, const TechniqueList& techniques)
      : path_(std::move(path)), techniques_(techniques) {}

  ExperimentFile read(const YAML::Node& root) const {
    ExperimentFile file;
    file.path = path_;
    if (root.IsNull())
      throw InputError(path_ + ": the file is empty; expected a mapping with 'experiments:' "
                               "(and optional 'settings:') or a list of experiments");
    YAML::Node experiments = root;
    if (root.IsMap()) {
      const auto entries = mapping(root, "", {"experiments", "settings"});
      const Entry* list = find(entries, "experiments");
      if (!list)
        throw InputError(at(root) + ": no 'experiments:' key; it holds the list of experiments");
      if (const Entry* settings = find(entries, "settings")) file.settings = read_settings(*settings);
      experiments = list->value;
      if (!experiments.IsSequence())
        throw InputError(at(*list) + ": 'experiments' must be a list of experiments, not " +
                         kind_of(experiments));
    } else if (!root.IsSequence()) {
      throw InputError(at(root) + ": expected a mapping with 'experiments:' or a list of "
                                  "experiments, not " + kind_of(root));
    }
    if (experiments.size() == 0)
      throw InputError(at(experiments) + ": the list of experiments is empty");
    for (std::size_t i = 0; i < experiments.size(); ++i)
      file.experiments.push_back(read_experiment(experiments[i], i + 1));
    return file;
  }

 private:
  std::string at(const YAML::Node& node) const {
    return path_ + ":" + std::to_string(node.Mark().line + 1);
  }
  std::string at(const Entry& e) const { return at(e.value.IsNull() ? e.key : e.value); }

  // The entries of a mapping in file order. Unknown keys (when `allowed` is not empty) and
  // repeated keys are errors; `context` says where in the document ("settings", ...).
  std::vector<Entry> mapping(const YAML::Node& node, const std::string& context,
                             const std::vector<std::string>& allowed) const {
    const std::string in = context.empty() ? "" : context + ": ";
    std::vector<Entry> entries;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;
      if (!key.IsScalar())
        throw InputError(at(key) + ": " + in + "a key must be a name, not " + kind_of(key));
      const std::string name = key.Scalar();
      if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), name) == allowed.end())
        throw InputError(at(key) + ": " + in + "key " + in_quotes(name) + " is unknown" +
                         did_you_mean(name, allowed) + " (keys: " + join_names(allowed) + ")");
      if (const Entry* first = find(entries, name))
        throw InputError(at(key) + ": " + in + "key " + in_quotes(name) + " appears twice (first at " +
                         at(first->key) + ")");
      entries.push_back({name, key, it->second});
    }
    return entries;
  }

  static const Entry* find(const std::vector<Entry>& entries, std::string_view name) {
    for (const auto& e : entries)
      if (e.name == name) return &e;
    return nullptr;
  }

  // ---- settings

  SettingsOverride read_settings(const Entry& settings) const {
    if (!settings.value.IsMap())
      throw InputError(at(settings) + ": 'settings' must be a mapping, not " + kind_of(settings.value));
    SettingsOverride s;
    const std::vector<std::string> keys{"seed",       "quick",     "warmup",   "min_samples",
                                        "min_time_s", "max_noise", "timeout_s"};
    for (const Entry& e : mapping(settings.value, "settings", keys)) {
      if (!e.value.IsScalar())
        throw InputError(at(e) + ": setting " + in_quotes(e.name) + " must be a value, not " +
                         kind_of(e.value));
      const std::string text = e.value.Scalar();
      if (e.name == "seed") s.seed = whole<std::uint64_t>(e, text, 0, "an integer >= 0");
      if (e.name == "warmup") s.warmup = whole<std::int64_t>(e, text, 0, "an integer >= 0");
      if (e.name == "min_samples") s.min_samples = whole<std::int64_t>(e, text, 1, "an integer >= 1");
      if (e.name == "min_time_s") s.min_time_s = real(e, text, false, "a number >= 0 (seconds)");
      if (e.name == "max_noise") s.max_noise = real(e, text, true, "a number > 0 (relative, 0.05 is 5%)");
      if (e.name == "timeout_s") s.timeout_s = real(e, text, true, "a number > 0 (seconds)");
      if (e.name == "quick") {
        if (text == "true" || text == "1") s.quick = true;
        else if (text == "false" || text == "0") s.quick = false;
        else throw bad_setting(e, text, "a bool: true, false, 1 or 0");
      }
    }
    return s;
  }

  InputError bad_setting(const Entry& e, const std::string& text, const std::string& allowed) const {
    return InputError(at(e) + ": setting " + in_quotes(e.name) + ": value " + in_quotes(text) + " is not " +
                      allowed);
  }

  template <class T>
  T whole(const Entry& e, const std::string& text, T min, const std::string& allowed) const {
    T value{};
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc{} || end != text.data() + text.size() || value < min)
      throw bad_setting(e, text, allowed);
    return value;
  }

  double real(const Entry& e, const std::string& text, bool positive, const std::string& allowed) const {
    double value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc{} || end != text.data() + text.size() || !std::isfinite(value) ||
        value < 0 || (positive && value == 0))
      throw bad_setting(e, text, allowed);
    return value;
  }

  // ---- experiments

  Experiment read_experiment(const YAML::Node& node, std::size_t number) const {
    const std::string name = "experiment " + std::to_string(number);
    if (!node.IsMap())
      throw InputError(at(node) + ": " + name + " must be a mapping with 'technique:', not " +
                       kind_of(node));
    const auto entries =
        mapping(node, name, {"technique", "variants", "devices", "params", "zip"});
    const Entry* technique = find(entries, "technique");
    if (!technique)
      throw InputError(at(node) + ": " + name + " has no 'technique:' key");
    if (!technique->value.IsScalar())
      throw InputError(at(*technique) + ": " + name + ": 'technique' must be a name, not " +
                       kind_of(technique->value));
    const Technique& t =
        find_technique(technique->value.Scalar(), techniques_, at(*technique) + ": " + name);

    Experiment e;
    e.technique = t.name();
    e.origin = at(node) + ": " + name;
    const std::string context = name + " (" + t.name() + ")";
    if (const Entry* variants = find(entries, "variants")) {
      for (const auto& [text, element] : names(*variants, context)) {
        find_variant(t, text, at(element) + ": " + context);
        e.variants.push_back(text);
      }
    }
    if (const Entry* devices = find(entries, "devices")) {
      for (const auto& [text, element] : names(*devices, context)) {
        parse_device(text, at(element) + ": " + context);
        e.devices.push_back(text);
      }
    }

    const auto specs = t.params();
    std::map<std::string, std::string> placed;  // parameter -> where it was put on an axis
    auto place = [&](const Entry& entry, const std::string& section) {
      const ParamSpec& spec = find_param(specs, entry.name, at(entry.key) + ": " + context);
      const auto [it, fresh] = placed.emplace(spec.name, section + " (" + at(entry.key) + ")");
      if (!fresh)
        throw InputError(at(entry.key) + ": " + context + ": parameter " + in_quotes(spec.name) +
                         " is already set in " + it->second +
                         "; a parameter may be on one axis only");
      return Axis{spec.name, values(spec, entry, context)};
    };
    if (const Entry* params = find(entries, "params")) {
      if (!params->value.IsMap())
        throw InputError(at(*params) + ": " + context + ": 'params' must be a mapping of "
                         "parameter: values, not " + kind_of(params->value));
      for (const Entry& entry : mapping(params->value, context, {}))
        e.axes.push_back(place(entry, "params"));
    }
    if (const Entry* zip = find(entries, "zip")) {
      std::vector<YAML::Node> groups;
      if (zip->value.IsMap()) groups.push_back(zip->value);
      else if (zip->value.IsSequence() && zip->value.size() > 0)
        for (const auto& group : zip->value) groups.push_back(group);
      else
        throw InputError(at(*zip) + ": " + context + ": 'zip' must be a mapping of parameter: "
                         "list, or a list of such mappings, not " + kind_of(zip->value));
      for (const auto& group : groups) {
        if (!group.IsMap() || group.size() == 0)
          throw InputError(at(group) + ": " + context + ": a zip group must be a mapping of "
                           "parameter: list, not " + kind_of(group));
        std::vector<Axis> axes;
        for (const Entry& entry : mapping(group, context, {})) {
          axes.push_back(place(entry, "zip"));
          if (axes.back().values.size() != axes.front().values.size())
            throw InputError(at(entry.key) + ": " + context + ": zip parameter " +
                             in_quotes(entry.name) + " has " +
                             std::to_string(axes.back().values.size()) + " values but " +
                             in_quotes(axes.front().name) + " has " +
                             std::to_string(axes.front().values.size()) +
                             "; zipped lists advance together, so their lengths must be equal");
        }
        e.zips.push_back(std::move(axes));
      }
    }
    // The checks that span keys (a variant against the devices asked for) live in validate.
    validate(e, t);
    return e;
  }

  // `variants:` and `devices:`: a list of names, or one name.
  std::vector<std::pair<std::string, YAML::Node>> names(const Entry& entry,
                                                        const std::string& context) const {
    std::vector<std::pair<std::string, YAML::Node>> out;
    if (entry.value.IsScalar()) {
      out.emplace_back(entry.value.Scalar(), entry.value);
    } else if (entry.value.IsSequence() && entry.value.size() > 0) {
      for (const auto& element : entry.value) {
        if (!element.IsScalar())
          throw InputError(at(element) + ": " + context + ": " + in_quotes(entry.name) +
                           " lists names, not " + kind_of(element));
        for (const auto& [seen, node] : out)
          if (seen == element.Scalar())
            throw InputError(at(element) + ": " + context + ": " + in_quotes(entry.name) + " lists " +
                             in_quotes(seen) + " twice");
        out.emplace_back(element.Scalar(), element);
      }
    } else {
      throw InputError(at(entry) + ": " + context + ": " + in_quotes(entry.name) +
                       " must be a name or a list of names, not " + kind_of(entry.value));
    }
    return out;
  }

  // A parameter's values: a scalar in the --set syntax (one value, a,b,c or a range), or a
  // list whose elements each use that syntax.
  std::vector<Value> values(const ParamSpec& spec, const Entry& entry, const std::string& context) const {
    const std::string prefix = ": " + context;
    if (entry.value.IsScalar()) return parse_values(spec, entry.value.Scalar(), at(entry) + prefix);
    if (!entry.value.IsSequence() || entry.value.size() == 0)
      throw InputError(at(entry) + prefix + ": parameter " + in_quotes(spec.name) +
                       " must be a value or a non-empty list of values, not " +
                       kind_of(entry.value) + " (" + describe(spec) + ")");
    std::vector<Value> out;
    for (const auto& element : entry.value) {
      if (!element.IsScalar())
        throw InputError(at(element) + prefix + ": parameter " + in_quotes(spec.name) +
                         ": a list element must be a value, not " + kind_of(element));
      for (Value& v : parse_values(spec, element.Scalar(), at(element) + prefix)) {
        if (std::find(out.begin(), out.end(), v) != out.end())
          throw InputError(at(element) + prefix + ": parameter " + in_quotes(spec.name) + ": value " +
                           in_quotes(to_string(v)) + " appears twice; each case would run twice");
        out.push_back(std::move(v));
      }
    }
    return out;
  }

  std::string path_;
  const TechniqueList& techniques_;
};

std::string extension_of(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

// Strict JSON first: YAML would accept a trailing comma or a comment that JSON tools reject.
void check_json(std::string_view text, const std::string& path) {
  try {
    [[maybe_unused]] const auto document = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& error) {
    // error.byte counts from 1 and points at the character where parsing stopped.
    const std::size_t stop = std::min<std::size_t>(error.byte > 0 ? error.byte - 1 : 0, text.size());
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(stop), '\n');
    std::string detail = error.what();
    if (const auto colon = detail.find(": "); colon != std::string::npos) detail = detail.substr(colon + 2);
    throw InputError(path + ":" + std::to_string(line) + ": not valid JSON: " + detail);
  }
}

}  // namespace

ExperimentFile parse_experiment_file(std::string_view text, const std::string& path,
                                     const std::vector<std::unique_ptr<Technique>>& techniques) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
    throw InputError(path + ": the file is empty; expected a mapping with 'experiments:' "
                            "(and optional 'settings:') or a list of experiments");
  const std::string ext = extension_of(path);
  if (ext != ".json" && ext != ".yaml" && ext != ".yml")
    throw InputError(path + ": unknown experiment file type " + in_quotes(ext) +
                     "; expected .yaml, .yml or .json");
  if (ext == ".json") check_json(text, path);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::ParserException& error) {
    throw InputError(path + ":" + std::to_string(error.mark.line + 1) + ": not valid YAML: " +
                     error.msg);
  }
  return FileReader(path, techniques).read(root);
}

ExperimentFile load_experiment_file(const std::string& path,
                                    const std::vector<std::unique_ptr<Technique>>& techniques) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw InputError(path + ": is a directory, not an experiment file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw InputError(path + ": cannot open the experiment file (" + std::strerror(errno) + ")");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_experiment_file(text.str(), path, techniques);
}

}  // namespace aiopt
