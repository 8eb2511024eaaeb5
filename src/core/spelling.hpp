#pragma once
// Suggestions for misspelt names ("did you mean 'hidden'?"), so that an unknown technique,
// parameter, variant or key in a config or on the command line points at the name meant.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aiopt {

// Damerau-Levenshtein distance (optimal string alignment): the fewest single-character
// insertions, deletions, substitutions and swaps of neighbours that turn `a` into `b`. Swaps
// count as one edit because "cuont" for "count" is as common a typo as a wrong letter.
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `name`, when it is close enough to be a plausible typo: at most a
// third of the longer name's characters differ (and at least one may). Ties go to the first.
std::optional<std::string> closest_name(std::string_view name,
                                        const std::vector<std::string>& candidates);

// "; did you mean 'x'?" when closest_name finds one, else "".
std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates);

// "a, b, c": names as listed in messages.
std::string join_names(const std::vector<std::string>& names);

// "'name'": a name or value as quoted in messages.
std::string in_quotes(std::string_view name);

}  // namespace aiopt
