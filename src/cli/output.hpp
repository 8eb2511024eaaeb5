#pragma once
// Writing a finished report: one rendering on stdout, one per output file.
#include <set>
#include <string>
#include <vector>

#include "report/printers.hpp"

namespace aiopt::cli {

// Fails early (InputError) on an output whose extension names no format or whose folder is missing,
// so that a long sweep never ends unable to write its results.
void check_outputs(const std::vector<std::string>& outputs);

// `format` empty means the table. Files whose canonical path is in `already_written` (streamed
// JSONL) are left alone.
void emit(const Report& report, const std::string& format, const std::vector<std::string>& outputs,
          const std::set<std::string>& already_written = {});

// Writes `text` to `path`; InputError naming the path when it cannot.
void write_file(const std::string& path, const std::string& text);

}  // namespace aiopt::cli
