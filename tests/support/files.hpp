#pragma once
// Files for tests: a temporary folder per test, and whole-file reads and writes.
#include <string>

namespace aiopt::test {

// A fresh, empty folder under the system's temporary folder, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

std::string read_text(const std::string& path);                   // throws when unreadable
void write_text(const std::string& path, const std::string& text);  // throws when unwritable

}  // namespace aiopt::test
