#pragma once
// CLI11's parse errors in aiopt's own words, so that a mistyped flag reads like every other bad
// input: "bench: unknown option '--techniqe'; did you mean '--technique'? (see 'aiopt bench
// --help')", printed after "aiopt: error: ".
#include <CLI/CLI.hpp>
#include <string>

namespace aiopt::cli {

// The message for `error`, thrown while `app` parsed: it names the subcommand that was parsing,
// and for arguments nobody expected, each unknown option with the closest option of that
// subcommand (or, with none close, all of them).
std::string parse_error_message(const CLI::App& app, const CLI::ParseError& error);

}  // namespace aiopt::cli
