#pragma once
// Comparing greedy tokens across devices. The CPU and CUDA sum in fp32 in different orders, so
// their logits differ by up to a tolerance, and where the reference's top two logits are closer
// than twice that, either device may pick either token. After such a step a free-running
// generation continues from another prefix, so tokens compare only before the first one.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace aiopt::test {

// The number of leading rows of `logits` ((rows, vocab), row-major) before the first whose top
// two logits are within 2·relative_tolerance·max|row| of each other; all rows when none is.
std::size_t rows_before_near_tie(const std::vector<float>& logits, std::size_t vocab, double relative_tolerance);

// Whether `got` equals `want` (one token per row of `want_logits`, the reference's logits at each
// choice) at every step before the first near-tie; the cut is reported with a failing check.
bool tokens_agree_before_near_tie(const std::vector<std::int32_t>& got, const std::vector<std::int32_t>& want,
                                  const std::vector<float>& want_logits, std::size_t vocab,
                                  double relative_tolerance);

}  // namespace aiopt::test
