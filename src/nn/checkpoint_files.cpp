#include "nn/checkpoint_files.hpp"

#include <fstream>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "nn/json_file.hpp"

namespace aiopt::nn {

CheckpointFiles::CheckpointFiles(SafetensorsFile file) : path_(file.path()) {
  for (const auto& [name, e] : file.entries()) owner_.emplace(name, 0);
  files_.push_back(std::move(file));
}

CheckpointFiles CheckpointFiles::from_index(const std::filesystem::path& index) {
  const std::string at = index.string();
  const nlohmann::json j = read_json_file(index);
  if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object())
    throw InputError(at + ": a safetensors index must be a JSON object with a \"weight_map\" object");
  CheckpointFiles out;
  out.path_ = at;
  std::map<std::string, std::size_t> shard_index;  // shard file name -> index in files_
  for (const auto& [name, shard] : j.at("weight_map").items()) {
    if (!shard.is_string())
      throw InputError(at + ": weight_map \"" + name + "\" must name a shard file, got " + shard.dump());
    const std::string file = shard.get<std::string>();
    if (file.empty() || std::filesystem::path(file).has_parent_path())
      throw InputError(at + ": weight_map \"" + name + "\" = \"" + file + "\" must be a file name in the index's folder");
    auto it = shard_index.find(file);
    if (it == shard_index.end()) {
      out.files_.emplace_back((index.parent_path() / file).string());
      it = shard_index.emplace(file, out.files_.size() - 1).first;
    }
    if (!out.files_[it->second].contains(name))
      throw InputError(at + ": weight_map places tensor '" + name + "' in '" + file + "', which does not hold it");
    out.owner_.emplace(name, it->second);
  }
  if (out.files_.empty()) throw InputError(at + ": the weight_map is empty");
  for (const SafetensorsFile& f : out.files_)
    for (const auto& [name, e] : f.entries()) {
      const auto owner = out.owner_.find(name);
      if (owner == out.owner_.end() || &out.files_[owner->second] != &f)
        throw InputError(at + ": shard '" + f.path() + "' holds tensor '" + name +
                         "', which the weight_map does not place there");
    }
  return out;
}

const SafetensorsFile::Entry& CheckpointFiles::entry(const std::string& name) const {
  const auto it = owner_.find(name);
  if (it == owner_.end()) throw InputError("checkpoint '" + path_ + "' has no tensor '" + name + "'");
  return files_[it->second].entry(name);
}

std::vector<std::string> CheckpointFiles::names() const {
  std::vector<std::string> out;
  for (const auto& [name, i] : owner_) out.push_back(name);
  return out;
}

Tensor CheckpointFiles::read_f32(const std::string& name) const {
  const auto it = owner_.find(name);
  if (it == owner_.end()) throw InputError("checkpoint '" + path_ + "' has no tensor '" + name + "'");
  return files_[it->second].read_f32(name);
}

std::uint64_t CheckpointFiles::bytes() const {
  std::uint64_t total = 0;
  for (const SafetensorsFile& f : files_) total += f.bytes().size();
  return total;
}

}  // namespace aiopt::nn
