// Runs that end cleanly: a real SIGINT or SIGTERM stops a sweep after the case in progress, which
// is recorded as interrupted; every -o output is written with what finished; the exit code is
// 128 + the signal; --resume runs the interrupted case again. A second signal aborts at once.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "report/report_json.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/schema.hpp"

using namespace aiopt;
using aiopt::test::Child;
using aiopt::test::TempDir;

namespace {

// Two quick tensor_fusion cases, then flash_attention's naive baseline and flash at N = 8192 on
// 2 heads: about 34 GFLOP a step, a few tenths of a second per sample on 2 cores, so a signal
// sent once the first two results are streamed lands while naive is being measured.
std::string write_config(const TempDir& tmp) {
  const std::string path = tmp.file("sweep.yaml");
  std::ofstream(path) << "settings: {quick: true, seed: 1}\n"
                         "experiments:\n"
                         "  - technique: tensor_fusion\n"
                         "    params: {chain: softmax, rows: 256, hidden: 256}\n"
                         "  - technique: flash_attention\n"
                         "    variants: [flash]\n"
                         "    params: {seq_len: 8192, heads: 2}\n";
  return path;
}

std::size_t line_count(const std::string& path) {
  std::ifstream in(path);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

// Waits until `path` has at least `lines` lines (a JSONL header and results); false after 120 s.
bool wait_for_lines(const std::string& path, std::size_t lines) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(path) && line_count(path) >= lines) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Waits until the file at `path` contains `text`; false after 60 s.
bool wait_for_text(const std::string& path, const std::string& text) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(path) && aiopt::test::read_text(path).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// The sweep of write_config(), writing r.jsonl, r.json and r.md, started and left running.
struct RunningSweep {
  TempDir tmp;
  std::string config = write_config(tmp), jsonl = tmp.file("r.jsonl"), json = tmp.file("r.json"),
              md = tmp.file("r.md");
  Child child{{"sweep", config, "-o", jsonl, "-o", json, "-o", md, "--progress", "never"}};
};

}  // namespace

TEST_CASE("SIGINT stops after the case in progress and writes every output with what finished",
          "[interrupt]") {
  RunningSweep run;
  const std::string &config = run.config, &jsonl = run.jsonl, &json = run.json, &md = run.md;
  Child& sweep = run.child;
  REQUIRE(wait_for_lines(jsonl, 3));  // the header and both tensor_fusion results
  sweep.signal(SIGINT);
  const auto r = sweep.wait();
  INFO(r.err);
  CHECK(r.exit_code == 130);
  CHECK_THAT(r.err, Catch::Contains("stopping after the case in progress") &&
                        Catch::Contains("interrupted by SIGINT: 2 of 4 cases finished, 1 interrupted, 1 not run"));

  REQUIRE(std::filesystem::exists(json));
  REQUIRE(std::filesystem::exists(md));
  const auto j = nlohmann::json::parse(aiopt::test::read_text(json));
  CHECK(aiopt::test::schema_errors(j).empty());
  CHECK(j["context"]["interrupted"]["signal"] == "SIGINT");
  CHECK(j["context"]["interrupted"]["cases_not_run"] == 1);
  REQUIRE(j["results"].size() == 3);
  CHECK(j["results"][0]["status"] == "ok");
  CHECK(j["results"][1]["status"] == "ok");
  CHECK(j["results"][2]["variant"] == "naive");
  CHECK(j["results"][2]["status"] == "interrupted");
  CHECK_THAT(j["results"][2]["message"].get<std::string>(), Catch::StartsWith("interrupted by SIGINT"));
  CHECK_FALSE(j["results"][2].contains("timing"));
  CHECK(line_count(jsonl) == 1 + 3);  // the stream holds the same three
  CHECK_THAT(aiopt::test::read_text(md), Catch::Contains("interrupted"));

  // --resume runs the interrupted case and the one never started; the finished ones are kept.
  const auto resumed = aiopt::test::run_aiopt({"sweep", config, "--resume", jsonl, "--progress", "never"});
  INFO(resumed.err);
  CHECK(resumed.exit_code == 0);
  CHECK_THAT(resumed.err, Catch::Contains("2 of 4 cases already in"));
  std::vector<std::string> warnings;
  const Report merged = load_report(jsonl, warnings);
  std::map<std::string, Status> status;
  for (const auto& result : merged.results) status[result.variant + " " + result.technique] = result.status;
  CHECK(status.size() == 4);
  for (const auto& [name, s] : status) {
    INFO(name);
    CHECK(s == Status::ok);
  }
}

TEST_CASE("SIGTERM stops the same way with exit code 143", "[interrupt]") {
  RunningSweep run;
  const std::string &jsonl = run.jsonl, &json = run.json;
  Child& sweep = run.child;
  REQUIRE(wait_for_lines(jsonl, 3));
  sweep.signal(SIGTERM);
  const auto r = sweep.wait();
  INFO(r.err);
  CHECK(r.exit_code == 143);
  REQUIRE(std::filesystem::exists(json));
  const auto j = nlohmann::json::parse(aiopt::test::read_text(json));
  CHECK(j["context"]["interrupted"]["signal"] == "SIGTERM");
  CHECK(j["results"].back()["status"] == "interrupted");
}

TEST_CASE("a second signal aborts at once without writing the reports", "[interrupt]") {
  RunningSweep run;
  const std::string &jsonl = run.jsonl, &json = run.json;
  Child& sweep = run.child;
  REQUIRE(wait_for_lines(jsonl, 3));
  // Past naive's preparation (milliseconds, then a stop point) into its warm-up and samples,
  // which take tenths of a second each with no stop point inside.
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  sweep.signal(SIGINT);
  REQUIRE(wait_for_text(sweep.stderr_path(), "stopping after the case in progress"));
  sweep.signal(SIGINT);
  const auto r = sweep.wait();
  INFO(r.err);
  CHECK(r.exit_code == 128 + SIGINT);
  CHECK_FALSE(std::filesystem::exists(json));
  CHECK(line_count(jsonl) == 3);  // what finished before the first signal stays streamed
}
