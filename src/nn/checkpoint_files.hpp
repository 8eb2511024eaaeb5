#pragma once
// The safetensors files of one checkpoint, read as one set of named tensors: a single file, or
// the shards that a Hugging Face index (model.safetensors.index.json) names:
//   {"metadata": {"total_size": N}, "weight_map": {"tensor name": "model-00001-of-00002.safetensors", ...}}
// Every shard is mapped (nn/safetensors.hpp), never copied whole.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "nn/safetensors.hpp"

namespace aiopt::nn {

class CheckpointFiles {
 public:
  explicit CheckpointFiles(SafetensorsFile file);
  // The shards an index names, from the index's folder. InputError naming the index (and the line
  // of a JSON error) for: JSON that is not an object with a "weight_map" object of strings, a shard
  // that is missing or damaged, a tensor the map places in a shard that does not hold it, and a
  // tensor a shard holds that the map does not place there.
  static CheckpointFiles from_index(const std::filesystem::path& index);

  // The file, or the index, as given.
  const std::string& path() const { return path_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }
  // The first file's __metadata__: Hugging Face writes the same {"format": "pt"} into every shard.
  const std::map<std::string, std::string>& metadata() const { return files_.front().metadata(); }

  bool contains(const std::string& name) const { return owner_.count(name) != 0; }
  const SafetensorsFile::Entry& entry(const std::string& name) const;  // InputError naming the checkpoint
  std::vector<std::string> names() const;                               // sorted
  Tensor read_f32(const std::string& name) const;                       // as SafetensorsFile::read_f32
  // Every file's size, summed.
  std::uint64_t bytes() const;

 private:
  CheckpointFiles() = default;
  std::string path_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, std::size_t> owner_;  // tensor name -> index in files_
};

}  // namespace aiopt::nn
