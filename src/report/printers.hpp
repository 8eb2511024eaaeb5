#pragma once
// Printers: one Report, six formats. A printer only lays out what the report holds; every
// number it shows was computed before (printers never compute a metric).
#include <string>
#include <string_view>
#include <vector>

#include "report/result.hpp"

namespace aiopt {

enum class Format { table, md, csv, json, jsonl, gbench };
std::string to_string(Format format);

// "table", "md", "csv", "json", "jsonl", "gbench"; anything else is an InputError listing those.
Format format_from_name(std::string_view name);
// Every format's name, in the order above.
std::vector<std::string> format_names();
// By extension: .json .jsonl .csv .md, .gbench.json (Google Benchmark's JSON), and .txt for the table; anything else is an InputError
// listing the extensions.
Format format_from_path(const std::string& path);

// table: the gains-vs-costs summary, fixed-width columns (sizes in binary units), a note for each
// roofline fraction above 1 (report/roofline_note.hpp), then a line about the machine.
// md: the same columns plus peak memory and working set as a Markdown table, the notes, then the
// context as a two-column table (report/context_rows.hpp).
// csv: one row per result, every parameter, timing (in ms), memory (raw bytes), working set and
// metric as a column.
// json: the whole report, indented by 2. jsonl: the header line, then one result per line.
// gbench: Google Benchmark's JSON (report/gbench.hpp).
std::string render(const Report& report, Format format);

// One CSV field quoted by RFC 4180: fields holding a comma, a double quote, CR or LF are
// enclosed in double quotes and their double quotes doubled; other fields are left as they are.
std::string csv_field(std::string_view text);

// Text as one Markdown table cell: '|' escaped, line breaks as spaces.
std::string md_cell(const std::string& text);

// Parameters as "name=value" words ("gen_tokens=64", "chain=layernorm"), strings unquoted; an empty
// string (a path parameter left at "none") is left out.
std::vector<std::string> param_words(const ojson& params);

// Fixed-width columns for the terminal. A cell is a list of lines and a row is as tall as its
// tallest cell, so long lists stack instead of being cut; the widest line sets a column's width.
// A row added with `spanning_tail` lets its last non-empty cell run on past its column (a failure
// message across the gains and costs columns) without widening that column for every row.
class TextTable {
 public:
  using Cell = std::vector<std::string>;
  explicit TextTable(std::vector<std::string> header);
  void add(std::vector<Cell> cells, bool spanning_tail = false);
  std::string str() const;

  // Words packed into lines of at most `width` characters (a longer word keeps its own line).
  static Cell packed(const std::vector<std::string>& words, std::size_t width);

 private:
  std::vector<std::vector<Cell>> rows_;
  std::vector<bool> spanning_;
};

}  // namespace aiopt
