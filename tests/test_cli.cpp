// The built aiopt binary end to end: reports in every format against the schema, compare,
// sweeps with resume and shards, and exit code 2 with a useful message on bad input.
#include <catch2/catch.hpp>

#include <set>
#include <sstream>

#include "cli/model_flags.hpp"
#include "core/hardware.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/schema.hpp"
#include "support/spinning_process.hpp"

using aiopt::test::run_aiopt;
using aiopt::test::schema_errors;
using aiopt::test::TempDir;
using nlohmann::json;

namespace {

// A small tensor_fusion grid that runs in well under a second per case.
const std::vector<std::string> small_fusion{"bench",        "--technique", "tensor_fusion", "--quick",
                                            "--set",        "rows=256",    "--set",         "hidden=128",
                                            "--min-time",   "0",           "--progress",    "never"};

std::vector<std::string> with(std::vector<std::string> base, const std::vector<std::string>& more) {
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

std::vector<json> jsonl_lines(const std::string& text) {
  std::vector<json> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(json::parse(line));
  return lines;
}

void require_valid(const json& doc, const std::string& definition = "") {
  const auto errors = schema_errors(doc, definition);
  for (const auto& e : errors) UNSCOPED_INFO(e);
  REQUIRE(errors.empty());
}

}  // namespace

TEST_CASE("version and help answer and exit 0", "[cli]") {
  auto v = run_aiopt({"--version"});
  CHECK(v.exit_code == 0);
  CHECK(v.out.find("aiopt ") != std::string::npos);
  auto h = run_aiopt({"bench", "--help"});
  CHECK(h.exit_code == 0);
  CHECK(h.out.find("tensor_fusion") != std::string::npos);
  CHECK(h.out.find("jsonl") != std::string::npos);
}

TEST_CASE("help names aiopt, not the path the binary was started by", "[cli]") {
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--help"}, {"bench", "--help"}}) {
    auto r = run_aiopt(args);
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find(AIOPT_BINARY) == std::string::npos);
  }
  CHECK(run_aiopt({"bench", "--help"}).out.find("Usage: aiopt bench [OPTIONS]") != std::string::npos);
  CHECK(run_aiopt({"--help"}).out.find("Usage: aiopt [OPTIONS] SUBCOMMAND") != std::string::npos);
}

TEST_CASE("command-line mistakes CLI11 finds read like aiopt's own errors, with did you mean", "[cli]") {
  struct Bad {
    std::vector<std::string> args;
    std::string message;  // the whole of stderr
  };
  const std::vector<Bad> cases{
      {{"bench", "--techniqe", "x"},
       "aiopt: error: bench: unknown option '--techniqe'; did you mean '--technique'? (see 'aiopt bench --help')\n"},
      {{"bench", "--technique", "tensor_fusion", "extra"},
       "aiopt: error: bench: unexpected argument 'extra' (see 'aiopt bench --help')\n"},
      {{"sweep", AIOPT_SOURCE_DIR "/configs/ci.yaml", "--dryrun"},
       "aiopt: error: sweep: unknown option '--dryrun'; did you mean '--dry-run'? (see 'aiopt sweep --help')\n"},
      {{"--bench"}, "aiopt: error: unknown option '--bench'; did you mean 'bench'? (see 'aiopt --help')\n"},
      {{"sweep"}, "aiopt: error: sweep: file is required (see 'aiopt sweep --help')\n"},
  };
  for (const auto& c : cases) {
    auto r = run_aiopt(c.args);
    CHECK(r.exit_code == 2);
    CHECK(r.err == c.message);
    CHECK(r.out.empty());
  }
  // Nothing close: the subcommand's options are listed instead.
  auto far = run_aiopt({"compare", "a.json", "b.json", "--zzzzzzzz"});
  CHECK(far.exit_code == 2);
  CHECK(far.err.find("aiopt: error: compare: unknown option '--zzzzzzzz'; options: --help, ") == 0);
  CHECK(far.err.find("--threshold") != std::string::npos);
}

TEST_CASE("model flags override the preset one dimension at a time under the parameters' names", "[cli]") {
  using aiopt::cli::ModelFlags;
  CLI::App generate;
  ModelFlags flags;
  aiopt::cli::add_model_flags(generate, flags, true);
  generate.parse("--preset tiny --channels 96 --vocab 300", false);
  const aiopt::nn::GptConfig tiny = aiopt::nn::preset("tiny");
  const aiopt::nn::GptConfig config = flags.applied_to(aiopt::nn::preset(flags.preset_name()));
  CHECK(config.channels == 96);
  CHECK(config.vocab == 300);
  CHECK(config.layers == tiny.layers);
  CHECK(config.heads == tiny.heads);
  REQUIRE(flags.given().size() == 2);
  CHECK(aiopt::cli::flag_of(flags.given()[0].first) == "--channels");
  for (const auto& d : aiopt::model_params::dimensions) CHECK(generate.get_option_no_throw(aiopt::cli::flag_of(d)));

  CLI::App train;
  ModelFlags train_flags;
  aiopt::cli::add_model_flags(train, train_flags, false);
  CHECK(train_flags.preset_name() == "small");
  CHECK_THROWS_AS(train.parse("--vocab 300", false), CLI::ExtrasError);
  CHECK_THROWS_AS(train.parse("--layers 0", false), CLI::ValidationError);
}

TEST_CASE("list --format json describes every technique with one baseline", "[cli]") {
  auto r = run_aiopt({"list", "--format", "json"});
  REQUIRE(r.exit_code == 0);
  const json list = json::parse(r.out);
  REQUIRE(list.is_array());
  bool fusion = false;
  for (const auto& t : list) {
    int baselines = 0;
    for (const auto& v : t.at("variants")) baselines += v.at("baseline").get<bool>();
    CHECK(baselines == 1);
    CHECK_FALSE(t.at("params").empty());
    if (t.at("name") == "tensor_fusion") fusion = true;
  }
  CHECK(fusion);
}

TEST_CASE("info --format json gives the context block", "[cli]") {
  auto r = run_aiopt({"info", "--format", "json"});
  REQUIRE(r.exit_code == 0);
  const json ctx = json::parse(r.out);
  CHECK(ctx.contains("aiopt_version"));
  CHECK(ctx.contains("cpu"));
  CHECK(ctx.at("peaks").at("host_triad_gbs").get<double>() > 0);
}

TEST_CASE("bench --format json pipes a valid report with checks and comparisons", "[cli]") {
  auto r = run_aiopt(with(small_fusion, {"--set", "chain=bias_gelu,layernorm,softmax", "--device", "cpu",
                                         "--format", "json"}));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json report = json::parse(r.out);  // stdout holds the JSON alone
  require_valid(report);
  CHECK(report.at("schema") == "aiopt-report/1");
  const auto& results = report.at("results");
  REQUIRE(results.size() == 6);  // 3 chains × (unfused, fused) on the CPU
  for (const auto& res : results) {
    CHECK(res.at("status") == "ok");
    CHECK(res.at("timing").at("count").get<int>() == static_cast<int>(res.at("timing").at("samples").size()));
    CHECK(res.at("memory").at("peak_bytes").get<double>() > 0);
    CHECK(res.at("repro").get<std::string>().find("--variant") != std::string::npos);
  }
  CHECK(report.at("comparisons").size() == 3);
  for (const auto& c : report.at("comparisons")) CHECK(c.at("speedup").get<double>() > 0);
}

TEST_CASE("repro reruns a case with every setting that changed its result", "[cli]") {
  const std::vector<std::string> sampling{"--warmup",  "2",   "--min-samples", "4",        "--max-noise",
                                          "0.2",       "--timeout", "3",      "--flush-cache"};
  auto r = run_aiopt(with(small_fusion, with(sampling, {"--set", "chain=softmax", "--device", "cpu", "--threads",
                                                        "1", "--seed", "5", "--format", "json"})));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json report = json::parse(r.out);
  require_valid(report);
  const auto& results = report.at("results");
  REQUIRE(results.size() == 2);
  const std::string repro = results[1].at("repro");
  INFO(repro);
  for (const char* flag : {" --set chain=softmax", " --set rows=256", " --seed 5", " --threads 1", " --quick",
                           " --warmup 2", " --min-samples 4", " --min-time 0", " --max-noise 0.2", " --timeout 3",
                           " --flush-cache"})
    CHECK(repro.find(flag) != std::string::npos);
  // The working set of a memory-bound chain, and that its caches were flushed.
  const json& working_set = results[1].at("working_set");
  CHECK(working_set.at("bytes").get<double>() == 2.0 * 256 * 128 * 4);  // softmax fused: x and y
  CHECK(working_set.at("cache_flushed") == true);

  // Run the repro as it is written: the same settings land in its report.
  REQUIRE(repro.rfind("aiopt ", 0) == 0);
  std::vector<std::string> args;
  std::istringstream words(repro.substr(6));
  for (std::string w; words >> w;) args.push_back(w);
  auto again = run_aiopt(with(args, {"--format", "json", "--progress", "never"}));
  INFO(again.err);
  REQUIRE(again.exit_code == 0);
  const json rerun = json::parse(again.out);
  CHECK(rerun.at("context").at("sampling") == report.at("context").at("sampling"));
  CHECK(rerun.at("context").at("quick") == true);
  // The baseline always runs beside the variant asked for.
  REQUIRE(rerun.at("results").size() == 2);
  const json& case_again = rerun.at("results")[1];
  CHECK(case_again.at("variant") == results[1].at("variant"));
  CHECK(case_again.at("params") == results[1].at("params"));
  CHECK(case_again.at("seed") == 5);
  CHECK(case_again.at("repro") == repro);
}

TEST_CASE("bench warns beside a process that keeps a core busy, and records busy_cores", "[cli]") {
  // As many threads as cores cannot all fit beside one spinning process.
  const std::string threads = std::to_string(aiopt::hardware::cpu().logical_cores);
  aiopt::test::ProcessResult r;
  {
    const aiopt::test::SpinningProcess spinning;
    r = run_aiopt(with(small_fusion, {"--device", "cpu", "--threads", threads, "--format", "json"}));
  }
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("this machine is busy") != std::string::npos);
  const json report = json::parse(r.out);
  require_valid(report);
  CHECK(report.at("context").at("busy_cores").get<double>() >= 0.5);
}

TEST_CASE("every -o format is written and parses, and JSONL lines validate", "[cli]") {
  TempDir tmp;
  auto r = run_aiopt(with(small_fusion, {"--device", "cpu", "-o", tmp.file("r.json"), "-o", tmp.file("r.jsonl"),
                                         "-o", tmp.file("r.csv"), "-o", tmp.file("r.md"), "--format", "csv"}));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json report = json::parse(aiopt::test::read_text(tmp.file("r.json")));
  require_valid(report);
  const std::size_t n = report.at("results").size();
  REQUIRE(n == 2);

  const auto lines = jsonl_lines(aiopt::test::read_text(tmp.file("r.jsonl")));
  REQUIRE(lines.size() == n + 1);
  require_valid(lines[0], "jsonl_header");
  for (std::size_t i = 1; i < lines.size(); ++i) require_valid(lines[i], "result");

  // CSV: a header and one row per result, on stdout and in the file alike.
  const std::string csv = aiopt::test::read_text(tmp.file("r.csv"));
  CHECK(csv == r.out);
  std::istringstream in(csv);
  std::string header;
  std::getline(in, header);
  CHECK(header.find("technique") == 0);
  CHECK(header.find("param.rows") != std::string::npos);
  std::size_t rows = 0;
  for (std::string line; std::getline(in, line);) rows += !line.empty();
  CHECK(rows == n);

  const std::string md = aiopt::test::read_text(tmp.file("r.md"));
  CHECK(md.find("| tensor_fusion") != std::string::npos);
}

TEST_CASE("compare of a report with itself is all SAME and exits 0, and report re-renders it", "[cli]") {
  TempDir tmp;
  auto r = run_aiopt(with(small_fusion, {"--device", "cpu", "-o", tmp.file("a.json")}));
  REQUIRE(r.exit_code == 0);
  auto c = run_aiopt({"compare", tmp.file("a.json"), tmp.file("a.json")});
  INFO(c.out << c.err);
  CHECK(c.exit_code == 0);
  CHECK(c.out.find("SAME") != std::string::npos);
  CHECK(c.out.find("SLOWER") == std::string::npos);
  CHECK(c.out.find("FASTER") == std::string::npos);

  auto rep = run_aiopt({"report", tmp.file("a.json"), "--format", "json"});
  REQUIRE(rep.exit_code == 0);
  const json again = json::parse(rep.out);
  require_valid(again);
  const json original = json::parse(aiopt::test::read_text(tmp.file("a.json")));
  CHECK(again.at("results") == original.at("results"));
}

TEST_CASE("a sweep resumes: finished cases are kept, only the missing ones run", "[cli]") {
  TempDir tmp;
  aiopt::test::write_text(tmp.file("sweep.yaml"),
                          "settings: {quick: true, min_time_s: 0}\n"
                          "experiments:\n"
                          "  - technique: tensor_fusion\n"
                          "    devices: [cpu]\n"
                          "    params: {chain: [bias_gelu, softmax], rows: 256, hidden: 128}\n");
  const std::string stream = tmp.file("s.jsonl");
  auto dry = run_aiopt({"sweep", tmp.file("sweep.yaml"), "--dry-run"});
  REQUIRE(dry.exit_code == 0);
  CHECK(dry.out.find("4 cases") != std::string::npos);

  auto full = run_aiopt({"sweep", tmp.file("sweep.yaml"), "-o", stream, "--progress", "never"});
  REQUIRE(full.exit_code == 0);
  auto lines = jsonl_lines(aiopt::test::read_text(stream));
  REQUIRE(lines.size() == 5);

  // Keep the header and the first two results, as if the sweep had been interrupted.
  std::string cut;
  for (int i = 0; i < 3; ++i) cut += lines[static_cast<std::size_t>(i)].dump() + "\n";
  aiopt::test::write_text(stream, cut + "{\"technique\": \"tensor_fu");  // a line cut mid-write

  auto resumed = run_aiopt({"sweep", tmp.file("sweep.yaml"), "--resume", stream, "--progress", "always"});
  INFO(resumed.err);
  REQUIRE(resumed.exit_code == 0);
  const auto after = jsonl_lines(aiopt::test::read_text(stream));
  REQUIRE(after.size() == 5);
  CHECK(after[1] == lines[1]);  // kept as they were, samples and all
  CHECK(after[2] == lines[2]);
  std::set<std::string> keys;
  for (std::size_t i = 1; i < after.size(); ++i)
    keys.insert(after[i].at("variant").get<std::string>() + after[i].at("params").dump());
  CHECK(keys.size() == 4);
  CHECK(resumed.err.find("2/2") != std::string::npos);  // two cases ran, not four
}

TEST_CASE("shards split a sweep into disjoint parts that cover it", "[cli]") {
  std::set<std::string> all, seen;
  auto lines_of = [](const std::string& out) {
    std::vector<std::string> v;
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);)
      if (line.find('\t') != std::string::npos) v.push_back(line.substr(line.find('\t') + 1));
    return v;
  };
  const std::string cfg = AIOPT_SOURCE_DIR "/configs/tensor_fusion.yaml";
  auto whole = run_aiopt({"sweep", cfg, "--dry-run"});
  REQUIRE(whole.exit_code == 0);
  for (auto& l : lines_of(whole.out)) all.insert(l);
  REQUIRE(all.size() > 2);
  std::size_t total = 0;
  for (const char* shard : {"0/2", "1/2"}) {
    auto part = run_aiopt({"sweep", cfg, "--dry-run", "--shard", shard});
    REQUIRE(part.exit_code == 0);
    for (auto& l : lines_of(part.out)) {
      CHECK(seen.insert(l).second);
      ++total;
    }
  }
  CHECK(total == all.size());
  CHECK(seen == all);
}

TEST_CASE("a CUDA case without a GPU is skipped with the reason, not failed", "[cli]") {
  auto r = run_aiopt(with(small_fusion, {"--device", "cuda", "--format", "json"}));
  INFO(r.err);
  const json report = json::parse(r.out);
  require_valid(report);
  for (const auto& res : report.at("results")) {
    if (res.at("status") == "skipped") CHECK_FALSE(res.at("message").get<std::string>().empty());
    else CHECK(res.at("status") == "ok");  // on a machine with a GPU the cases run
  }
  CHECK(r.exit_code == 0);
}

TEST_CASE("bad input exits 2 with a message that names the problem", "[cli]") {
  struct Bad {
    std::vector<std::string> args;
    std::string expect;
  };
  const std::vector<Bad> cases{
      {{"bench", "--technique", "tensor_fuson"}, "did you mean 'tensor_fusion'"},
      {{"bench", "--technique", "tensor_fusion", "--set", "hiden=64"}, "hidden"},
      {{"bench", "--technique", "tensor_fusion", "--set", "rows=abc"}, "rows"},
      {{"bench", "--technique", "tensor_fusion", "--set", "chain=gelu"}, "bias_gelu"},
      {{"bench", "--technique", "tensor_fusion", "--variant", "fusd"}, "fused"},
      {{"bench", "--technique", "tensor_fusion", "--device", "tpu"}, "tpu"},
      {{"bench", "--technique", "tensor_fusion", "-o", "/nonexistent/dir/r.json"}, "/nonexistent/dir"},
      {{"bench", "--technique", "tensor_fusion", "-o", "report.xlsx"}, "xlsx"},
      {{"bench", "--technique", "tensor_fusion", "--threads", "0"}, "--threads: '0' is not allowed; use a number > 0"},
      {{"bench", "--technique", "tensor_fusion", "--max-noise", "-1"}, "use a number >= 0"},
      {{"generate", "--threads", "0", "--prompt", "x"}, "use a number > 0"},
      {{"generate", "--device", "cuda:x", "--prompt", "x"}, "--device 'cuda:x' is unknown (allowed: cpu, cuda, cuda:N)"},
      {{"bench", "--technique", "tensor_fusion", "--device", "cuda:0"}, "--device 'cuda:0' is unknown (allowed: cpu, cuda, all)"},
      {{"sweep", "/nonexistent.yaml"}, "nonexistent"},
      {{"sweep", AIOPT_SOURCE_DIR "/configs/ci.yaml", "--shard", "2/2"}, "shard"},
      {{"compare", "/nonexistent.json", "/nonexistent.json"}, "nonexistent"},
      {{"frobnicate"}, "frobnicate"},
  };
  for (const auto& c : cases) {
    auto r = run_aiopt(c.args);
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    INFO("aiopt " << joined << "\nstderr: " << r.err);
    CHECK(r.exit_code == 2);
    CHECK((r.err + r.out).find(c.expect) != std::string::npos);
  }
}

TEST_CASE("a malformed experiment file names the file and line", "[cli]") {
  TempDir tmp;
  aiopt::test::write_text(tmp.file("bad.yaml"),
                          "experiments:\n"
                          "  - technique: tensor_fusion\n"
                          "    params:\n"
                          "      rows: [256, -4]\n");
  auto r = run_aiopt({"sweep", tmp.file("bad.yaml"), "--dry-run"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("bad.yaml:4") != std::string::npos);
  CHECK(r.err.find("rows") != std::string::npos);
}

TEST_CASE("the CI sweep runs clean: every case ok, or skipped for an absent GPU", "[cli]") {
  TempDir tmp;
  auto r = run_aiopt({"sweep", AIOPT_SOURCE_DIR "/configs/ci.yaml", "-o", tmp.file("ci.jsonl"), "--progress", "never",
                      "--format", "json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json report = json::parse(r.out);
  require_valid(report);
  REQUIRE_FALSE(report.at("results").empty());
  for (const auto& res : report.at("results")) {
    INFO(res.dump());
    CHECK((res.at("status") == "ok" || res.at("status") == "skipped"));
  }
  const auto lines = jsonl_lines(aiopt::test::read_text(tmp.file("ci.jsonl")));
  CHECK(lines.size() == report.at("results").size() + 1);
}
