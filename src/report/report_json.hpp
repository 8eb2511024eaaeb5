#pragma once
// Reports as JSON (schema aiopt-report/1, see docs/report-format.md): conversion both ways,
// loading .json and .jsonl files, streaming JSONL while a sweep runs, and merging shards.
#include <fstream>
#include <string>
#include <vector>

#include "report/result.hpp"

namespace aiopt {

ojson to_json(const Timing& timing);
ojson to_json(const MemoryRecord& memory);
ojson to_json(const WorkingSet& working_set);
ojson to_json(const Result& result);
ojson to_json(const Comparison& comparison);
ojson to_json(const Report& report);

// The first line of a JSONL report: {"schema": ..., "context": {...}}.
ojson jsonl_header(const ojson& context);

// The reverse of to_json. `where` prefixes every error message ("runs.jsonl:7" or
// "report.json: results[3]"). Bad input throws InputError naming the key, the bad value and what
// is allowed.
Result result_from_json(const ojson& j, const std::string& where);
Comparison comparison_from_json(const ojson& j, const std::string& where);
// A whole report; without "comparisons" they are computed from the results.
Report report_from_json(const ojson& j, const std::string& where);

// Reads a .json report or a .jsonl stream. A JSONL stream whose last line was cut off (the sweep
// was interrupted mid-write) loads without that line, and a sentence saying so is appended to
// `warnings`; any other bad line is an InputError naming the file and line. In JSONL a later
// result with the same key() replaces an earlier one (a resumed sweep ran it again).
Report load_report(const std::string& path, std::vector<std::string>& warnings);

// The first report's context, every result (a later result with the same key() replaces an
// earlier one, in the earlier one's place), and comparisons computed afresh.
Report merge_reports(const std::vector<Report>& reports);

// Appends results to a JSONL file one line at a time, flushing each, so an interrupted sweep
// loses nothing it finished. A new file (or append == false) starts with the header line; with
// append == true an existing stream is continued under its own header, after cutting off a
// last line that an interruption left incomplete.
class JsonlWriter {
 public:
  JsonlWriter(const std::string& path, const ojson& context, bool append);
  void write(const Result& result);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace aiopt
