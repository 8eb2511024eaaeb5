#include "report/printers.hpp"


#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <stdexcept>

#include "core/error.hpp"
#include "core/spelling.hpp"
#include "report/comparison.hpp"
#include "report/context_rows.hpp"
#include "report/gbench.hpp"
#include "report/number_text.hpp"
#include "report/report_json.hpp"
#include "report/roofline_note.hpp"

namespace aiopt {

namespace {

constexpr std::array<std::pair<const char*, Format>, 6> named_formats{{{"table", Format::table},
                                                                      {"md", Format::md},
                                                                      {"csv", Format::csv},
                                                                      {"json", Format::json},
                                                                      {"jsonl", Format::jsonl},
                                                                      {"gbench", Format::gbench}}};

// ---- cells shared by the table and Markdown

// The median in a unit that keeps 3 significant digits readable, and below it half the
// interquartile range relative to the median as the noise: "1.23 ms", "±0.8%".
std::vector<std::string> median_cell(const Result& r) {
  if (!r.timing) return {"-"};
  const double ms = in_milliseconds(r.timing->median, r.timing->unit);
  const double abs = std::fabs(ms);
  double v = ms;
  const char* unit = "ms";
  if (abs >= 1e3) {
    v = ms / 1e3;
    unit = "s";
  } else if (abs < 1e-3) {
    v = ms * 1e6;
    unit = "ns";
  } else if (abs < 1) {
    v = ms * 1e3;
    unit = "us";
  }
  const double a = std::fabs(v);
  std::vector<std::string> cell{printed(a < 10 ? "%.2f" : a < 100 ? "%.1f" : "%.0f", v) + " " + unit};
  if (r.timing->count > 1 && r.timing->median > 0)
    cell.push_back("±" + printed("%.1f%%", 50 * r.timing->iqr / r.timing->median));
  return cell;
}

// The tracked peak in binary units: "62 MiB".
std::string memory_cell(const Result& r) {
  return r.memory ? byte_text(static_cast<double>(r.memory->peak_bytes)) : "-";
}

// "56 MiB in L3", "56 MiB in L3, flushed": the declared working set and the level it fits.
std::string working_set_cell(const Result& r) {
  if (!r.working_set) return "-";
  const WorkingSet& w = *r.working_set;
  return byte_text(static_cast<double>(w.bytes)) + " in " + w.fits + (w.cache_flushed ? ", flushed" : "");
}

std::string comparison_key(const std::string& technique, const std::string& variant,
                           const std::string& device, const ojson& params) {
  return technique + "|" + variant + "|" + device + "|" + params.dump();
}

std::map<std::string, const Comparison*> comparisons_by_result(const Report& report) {
  std::map<std::string, const Comparison*> by;
  for (const auto& c : report.comparisons)
    by.emplace(comparison_key(c.technique, c.variant, c.device, c.params), &c);
  return by;
}

const Comparison* comparison_of(const std::map<std::string, const Comparison*>& by,
                                const Result& r) {
  const auto it = by.find(comparison_key(r.technique, r.variant, r.device, r.params));
  return it == by.end() ? nullptr : it->second;
}

// A context value as text, or "" when absent: `path` walks objects by key.
std::string context_text(const ojson& context, std::initializer_list<const char*> path) {
  const ojson* node = &context;
  for (const char* key : path) {
    if (!node->is_object() || !node->contains(key)) return "";
    node = &(*node)[key];
  }
  if (node->is_null()) return "";
  return node->is_string() ? node->get<std::string>() : node->dump();
}

// "cpu: AMD EPYC 9B45, 2 cores, 2 threads, BLAS Haswell; gpu: NVIDIA H200 (sm 9.0); aiopt 0.1.0"
std::string context_line(const ojson& context) {
  std::vector<std::string> parts;
  auto cpu = context_text(context, {"cpu", "model"});
  if (cpu.empty()) cpu = "unknown";
  // cores is a count, or {"logical": n, "physical": m} as the machine context writes it.
  auto cores = context_text(context, {"cpu", "cores", "logical"});
  if (cores.empty()) cores = context_text(context, {"cpu", "cores"});
  if (!cores.empty()) cpu += ", " + cores + " cores";
  const auto threads = context_text(context, {"threads"});
  if (!threads.empty()) cpu += ", " + threads + " threads";
  const auto blas = context_text(context, {"blas", "core"});
  if (!blas.empty()) cpu += ", BLAS " + blas;
  parts.push_back("cpu: " + cpu);
  std::string gpus;
  if (context.contains("devices") && context["devices"].is_array())
    for (const auto& d : context["devices"]) {
      if (!gpus.empty()) gpus += ", ";
      gpus += context_text(d, {"name"});
      const auto sm = context_text(d, {"sm"});
      if (!sm.empty()) gpus += " (sm " + sm + ")";
    }
  parts.push_back("gpu: " + (gpus.empty() ? std::string("none") : gpus));
  const auto version = context_text(context, {"aiopt_version"});
  if (!version.empty()) {
    const auto commit = context_text(context, {"git_commit"});
    parts.push_back("aiopt " + version + (commit.empty() ? "" : " (" + commit + ")"));
  }
  std::string line;
  for (const auto& p : parts) line += (line.empty() ? "" : "; ") + p;
  return line;
}

// ---- table

// Terminal columns a line takes: UTF-8 continuation bytes take none ("±" is two bytes, one column).
std::size_t display_width(const std::string& line) {
  return static_cast<std::size_t>(std::count_if(
      line.begin(), line.end(), [](char ch) { return (static_cast<unsigned char>(ch) & 0xC0) != 0x80; }));
}

// Splits `text` into lines of at most `width` characters at spaces where it can.
std::vector<std::string> wrapped(const std::string& text, std::size_t width) {
  std::vector<std::string> lines;
  std::string line;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find_first_of(" \n", start);
    if (end == std::string::npos) end = text.size();
    const auto word = text.substr(start, end - start);
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      lines.push_back(line);
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
    if (end < text.size() && text[end] == '\n') {
      lines.push_back(line);
      line.clear();
    }
    start = end + 1;
  }
  if (!line.empty()) lines.push_back(line);
  return lines;
}

std::string render_table(const Report& report) {
  // Params wrap and each gain and cost phrase takes its own line, so no column needs truncating
  // and the table stays about 120 characters wide.
  constexpr std::size_t params_width = 20, message_width = 48, note_width = 116;
  TextTable table({"technique", "variant", "device", "params", "median", "status", "gains", "costs"});
  const auto by = comparisons_by_result(report);
  bool any_baseline = false;
  for (const auto& r : report.results) {
    std::vector<TextTable::Cell> row{{r.technique}, {r.variant + (r.baseline ? " *" : "")},
                                     {r.device},    TextTable::packed(param_words(r.params), params_width),
                                     median_cell(r), {to_string(r.status)}, {}, {}};
    any_baseline = any_baseline || r.baseline;
    const bool ok = r.status == Status::ok;
    if (!ok) {
      row[6] = wrapped(r.message, message_width);
    } else if (const Comparison* c = comparison_of(by, r)) {
      row[6] = c->gains;
      row[7] = c->costs;
    }
    table.add(std::move(row), !ok);
  }
  std::string out = table.str();
  if (any_baseline) out += "* baseline; gains and costs are relative to it\n";
  for (const auto& note : roofline_notes(report)) {
    const auto lines = wrapped("note: " + note, note_width);
    for (std::size_t i = 0; i < lines.size(); ++i) out += (i ? "  " : "") + lines[i] + "\n";
  }
  out += context_line(report.context) + "\n";
  return out;
}

// ---- Markdown

std::string joined(const std::vector<std::string>& parts, const std::string& separator) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : separator) + p;
  return out;
}

std::string render_md(const Report& report) {
  std::string out =
      "| technique | variant | device | params | median | memory | working set | status | gains | costs |\n"
      "|---|---|---|---|---:|---:|---|---|---|---|\n";
  const auto by = comparisons_by_result(report);
  for (const auto& r : report.results) {
    std::string status = to_string(r.status);
    if (r.status != Status::ok && !r.message.empty()) status += ": " + r.message;
    std::string gains, costs;
    if (const Comparison* c = comparison_of(by, r); c && r.status == Status::ok) {
      gains = joined(c->gains, ", ");
      costs = joined(c->costs, ", ");
    }
    const std::vector<std::string> cells{
        r.technique,  r.variant + (r.baseline ? " (baseline)" : ""), r.device,
        joined(param_words(r.params), " "), joined(median_cell(r), " "), memory_cell(r),
        working_set_cell(r), status, gains, costs};
    out += "|";
    for (const auto& cell : cells) {
      out += ' ';
      out += md_cell(cell);
      out += " |";
    }
    out += "\n";
  }
  if (const auto notes = roofline_notes(report); !notes.empty()) {
    out += "\nNotes:\n\n";
    for (const auto& note : notes) out += "- " + md_cell(note) + "\n";
  }
  out += "\nContext:\n\n| key | value |\n|---|---|\n";
  for (const auto& [key, text] : context_rows(report.context))
    out += "| " + md_cell(key) + " | " + md_cell(text) + " |\n";
  return out;
}

// ---- CSV

// Numbers as the shortest text that reads back to the same double; nothing for NaN.
std::string csv_number(double v) { return std::isfinite(v) ? ojson(v).dump() : ""; }

void add_unique(std::vector<std::string>& names, const std::string& name) {
  if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
}

std::string render_csv(const Report& report) {
  std::vector<std::string> params, metrics;
  for (const auto& r : report.results) {
    for (const auto& [name, v] : r.params.items()) add_unique(params, name);
    for (const auto& m : r.metrics) add_unique(metrics, m.name);
  }
  std::vector<std::string> header{"technique", "variant", "baseline", "device", "status", "message"};
  for (const auto& p : params) header.push_back("param." + p);
  for (const auto& f : timing_times) header.push_back(std::string(f.name) + "_ms");
  for (const auto& f : timing_counts) header.push_back(f.name);
  for (const char* t : {"peak_bytes", "host_peak_bytes", "peak_rss_bytes", "working_set_bytes", "working_set_fits"})
    header.push_back(t);
  for (const auto& m : metrics) header.push_back("metric." + m);
  header.push_back("repro");

  std::string out;
  auto emit = [&out](const std::vector<std::string>& fields) {
    for (std::size_t i = 0; i < fields.size(); ++i) {
      if (i) out += ',';
      out += csv_field(fields[i]);
    }
    out += "\n";
  };
  emit(header);
  for (const auto& r : report.results) {
    std::vector<std::string> row{r.technique, r.variant,          r.baseline ? "true" : "false",
                                 r.device,    to_string(r.status), r.message};
    for (const auto& p : params) {
      const auto it = r.params.find(p);
      row.push_back(it == r.params.end() ? ""
                    : it->is_string()    ? it->get<std::string>()
                                         : it->dump());
    }
    if (r.timing) {
      const auto& t = *r.timing;
      for (const auto& f : timing_times) row.push_back(csv_number(in_milliseconds(t.*f.member, t.unit)));
      for (const auto& f : timing_counts) row.push_back(std::to_string(t.*f.member));
    } else {
      row.insert(row.end(), std::size(timing_times) + std::size(timing_counts), "");
    }
    if (r.memory) {
      row.push_back(std::to_string(r.memory->peak_bytes));
      row.push_back(std::to_string(r.memory->host_peak_bytes));
      row.push_back(r.memory->peak_rss_bytes ? std::to_string(*r.memory->peak_rss_bytes) : "");
    } else {
      row.insert(row.end(), 3, "");
    }
    if (r.working_set) {
      row.push_back(std::to_string(r.working_set->bytes));
      row.push_back(r.working_set->fits);
    } else {
      row.insert(row.end(), 2, "");
    }
    for (const auto& name : metrics) {
      const Metric* m = r.metric(name);
      row.push_back(m ? csv_number(m->value) : "");
    }
    row.push_back(r.repro);
    emit(row);
  }
  return out;
}

std::string render_jsonl(const Report& report) {
  std::string out = jsonl_header(report.context).dump() + "\n";
  for (const auto& r : report.results) out += to_json(r).dump() + "\n";
  return out;
}

}  // namespace

std::string to_string(Format format) {
  for (const auto& [name, f] : named_formats)
    if (f == format) return name;
  return "?";
}

Format format_from_name(std::string_view name) {
  for (const auto& [n, f] : named_formats)
    if (name == n) return f;
  const std::vector<std::string> names = format_names();
  throw InputError("unknown report format '" + std::string(name) + "'" + did_you_mean(name, names) +
                   "; allowed: " + join_names(names));
}

std::vector<std::string> format_names() {
  std::vector<std::string> names;
  for (const auto& [n, f] : named_formats) names.push_back(n);
  return names;
}

Format format_from_path(const std::string& path) {
  const auto dot = path.rfind('.');
  const auto slash = path.find_last_of("/\\");
  const std::string ext =
      dot == std::string::npos || (slash != std::string::npos && dot < slash) ? ""
                                                                               : path.substr(dot);
  if (ext == ".json") {
    const std::string gbench = ".gbench.json";
    const bool is_gbench = path.size() >= gbench.size() && path.compare(path.size() - gbench.size(), gbench.size(), gbench) == 0;
    return is_gbench ? Format::gbench : Format::json;
  }
  if (ext == ".jsonl") return Format::jsonl;
  if (ext == ".csv") return Format::csv;
  if (ext == ".md") return Format::md;
  if (ext == ".txt") return Format::table;
  throw InputError(path + ": cannot tell the report format from the extension '" + ext +
                   "'; allowed: .json, .jsonl, .csv, .md, .gbench.json (Google Benchmark's JSON), .txt (a table)");
}

std::string render(const Report& report, Format format) {
  switch (format) {
    case Format::table: return render_table(report);
    case Format::md: return render_md(report);
    case Format::csv: return render_csv(report);
    case Format::json: return to_json(report).dump(2) + "\n";
    case Format::jsonl: return render_jsonl(report);
    case Format::gbench: return render_gbench(report);
  }
  return "";
}

TextTable::TextTable(std::vector<std::string> header) {
  std::vector<Cell> cells;
  for (auto& h : header) cells.push_back({std::move(h)});
  add(std::move(cells));
}

std::vector<std::string> param_words(const ojson& params) {
  std::vector<std::string> words;
  for (const auto& [name, v] : params.items()) {
    if (v.is_string() && v.get<std::string>().empty()) continue;  // an empty string parameter is "none"
    words.push_back(name + "=" + (v.is_string() ? v.get<std::string>() : v.dump()));
  }
  return words;
}

TextTable::Cell TextTable::packed(const std::vector<std::string>& words, std::size_t width) {
  Cell lines;
  for (const auto& w : words) {
    if (lines.empty() || lines.back().size() + 1 + w.size() > width)
      lines.push_back(w);
    else
      lines.back() += " " + w;
  }
  return lines;
}

void TextTable::add(std::vector<Cell> cells, bool spanning_tail) {
  if (!rows_.empty() && cells.size() != rows_.front().size())
    throw std::logic_error("TextTable: a row has " + std::to_string(cells.size()) +
                           " cells but the header has " + std::to_string(rows_.front().size()));
  rows_.push_back(std::move(cells));
  spanning_.push_back(spanning_tail);
}

std::string TextTable::str() const {
  const std::size_t columns = rows_.front().size();
  std::vector<std::size_t> width(columns, 0);
  for (std::size_t i = 0; i < rows_.size(); ++i) {
    std::size_t counted = columns;
    if (spanning_[i])
      while (counted > 0 && rows_[i][counted - 1].empty()) --counted;
    if (spanning_[i] && counted > 0) --counted;
    for (std::size_t col = 0; col < counted; ++col)
      for (const auto& line : rows_[i][col]) width[col] = std::max(width[col], display_width(line));
  }
  std::string out;
  for (std::size_t i = 0; i < rows_.size(); ++i) {
    std::size_t height = 1;
    for (const auto& cell : rows_[i]) height = std::max(height, cell.size());
    for (std::size_t l = 0; l < height; ++l) {
      std::string line;
      for (std::size_t col = 0; col < columns; ++col) {
        const auto& cell = rows_[i][col];
        const std::string text = l < cell.size() ? cell[l] : "";
        line += text;
        const std::size_t used = display_width(text);
        if (col + 1 < columns) line += std::string(width[col] - std::min(width[col], used) + 2, ' ');
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out += line + "\n";
    }
    if (i == 0) {
      std::size_t total = 2 * (columns - 1);
      for (auto w : width) total += w;
      out += std::string(total, '-') + "\n";
    }
  }
  return out;
}

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char ch : text) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

std::string md_cell(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '|')
      out += "\\|";
    else if (ch == '\n' || ch == '\r')
      out += ' ';
    else
      out += ch;
  }
  return out;
}

}  // namespace aiopt
