#include "kernels/cpu/paged_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/thread_workspace.hpp"

namespace aiopt::kernels::cpu {

namespace {

// The sequence that new row r belongs to: the s with q_start[s] <= r < q_start[s + 1].
std::size_t sequence_of(const PagedBatch& batch, std::size_t r) {
  const std::int32_t* first = batch.q_start + 1;
  return static_cast<std::size_t>(std::upper_bound(first, first + batch.seqs, static_cast<std::int64_t>(r)) - first);
}

// Where new row r sits: its sequence's block table and its absolute position.
struct RowPlace {
  const std::int32_t* table;
  std::size_t position;
};
RowPlace place_of(const PagedBatch& batch, std::size_t r) {
  const std::size_t s = sequence_of(batch, r);
  const std::size_t q_len = static_cast<std::size_t>(batch.q_start[s + 1] - batch.q_start[s]);
  const std::size_t first = static_cast<std::size_t>(batch.context[s]) - q_len;  // position of row q_start[s]
  return {batch.block_tables + batch.table_start[s], first + (r - static_cast<std::size_t>(batch.q_start[s]))};
}

// The checks of paged_attention.hpp, before anything is read through a table or written; returns
// the longest context, the scores a row may need.
std::size_t checked_batch(const PagedBatch& b, const char* who) {
  const std::string name(who);
  if (b.seqs == 0) {
    if (b.rows != 0) throw std::invalid_argument(name + ": " + std::to_string(b.rows) + " rows in 0 sequences");
    return 0;
  }
  if (b.heads == 0 || b.head_dim == 0 || b.block_size == 0)
    throw std::invalid_argument(name + ": heads, head_dim and block_size must be positive");
  if (b.q_start[0] != 0) throw std::invalid_argument(name + ": q_start[0] is " + std::to_string(b.q_start[0]) + ", not 0");
  std::size_t longest = 0;
  for (std::size_t s = 0; s < b.seqs; ++s) {
    const std::int64_t q_len = static_cast<std::int64_t>(b.q_start[s + 1]) - b.q_start[s];
    if (q_len < 1)
      throw std::invalid_argument(name + ": sequence " + std::to_string(s) + " brings " + std::to_string(q_len) +
                                  " new rows (q_start must increase)");
    if (b.context[s] < q_len)
      throw std::invalid_argument(name + ": sequence " + std::to_string(s) + " has context " +
                                  std::to_string(b.context[s]) + " shorter than its " + std::to_string(q_len) +
                                  " new rows");
    if (b.table_start[s] < 0)
      throw std::out_of_range(name + ": sequence " + std::to_string(s) + " has table_start " +
                              std::to_string(b.table_start[s]));
    const std::size_t context = static_cast<std::size_t>(b.context[s]);
    longest = std::max(longest, context);
    const std::int32_t* table = b.block_tables + b.table_start[s];
    for (std::size_t i = 0; i < (context + b.block_size - 1) / b.block_size; ++i)
      if (table[i] < 0 || static_cast<std::size_t>(table[i]) >= b.blocks)
        throw std::out_of_range(name + ": sequence " + std::to_string(s) + " maps positions from " +
                                std::to_string(i * b.block_size) + " to block " + std::to_string(table[i]) +
                                ", outside the pool's [0, " + std::to_string(b.blocks) + ")");
  }
  if (static_cast<std::size_t>(b.q_start[b.seqs]) != b.rows)
    throw std::invalid_argument(name + ": q_start[seqs] is " + std::to_string(b.q_start[b.seqs]) + " but rows is " +
                                std::to_string(b.rows));
  return longest;
}

}  // namespace

void check_paged_batch(const PagedBatch& batch) { checked_batch(batch, "paged batch"); }

void embedding_at(const std::int32_t* tokens, const std::int32_t* positions, const float* wte, const float* wpe,
                  float* y, std::size_t rows, std::size_t vocab, std::size_t context, std::size_t channels) {
  // Every index is checked before anything is written, so a bad one leaves y untouched.
  for (std::size_t r = 0; r < rows; ++r) {
    if (tokens[r] < 0 || static_cast<std::size_t>(tokens[r]) >= vocab)
      throw std::out_of_range("embedding_at: token " + std::to_string(tokens[r]) + " at row " + std::to_string(r) +
                              " is outside [0, " + std::to_string(vocab) + ")");
    if (positions[r] < 0 || static_cast<std::size_t>(positions[r]) >= context)
      throw std::out_of_range("embedding_at: position " + std::to_string(positions[r]) + " at row " +
                              std::to_string(r) + " is outside the " + std::to_string(context) +
                              " learned positions");
  }
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* te = wte + static_cast<std::size_t>(tokens[r]) * channels;     // (C)
    const float* pe = wpe + static_cast<std::size_t>(positions[r]) * channels;  // (C)
    float* yr = y + r * channels;
#pragma omp simd
    for (std::size_t c = 0; c < channels; ++c) yr[c] = te[c] + pe[c];
  }
}

void paged_kv_write(const float* qkv, float* q, float* k_pool, float* v_pool, const PagedBatch& batch) {
  checked_batch(batch, "paged_kv_write");
  const std::size_t d = batch.head_dim, heads = batch.heads, c = heads * d, bs = batch.block_size;
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < batch.rows; ++r) {
    const float* row = qkv + r * 3 * c;  // q, then k at +C, v at +2C
    std::copy_n(row, c, q + r * c);
    const RowPlace at = place_of(batch, r);
    const std::size_t block = static_cast<std::size_t>(at.table[at.position / bs]), offset = at.position % bs;
    for (std::size_t h = 0; h < heads; ++h) {
      const std::size_t slot = ((block * heads + h) * bs + offset) * d;
      std::copy_n(row + c + h * d, d, k_pool + slot);
      std::copy_n(row + 2 * c + h * d, d, v_pool + slot);
    }
  }
}

void paged_attention(const float* q, const float* k_pool, const float* v_pool, float* out, const PagedBatch& batch) {
  const std::size_t longest = checked_batch(batch, "paged_attention");
  if (batch.rows == 0) return;
  const std::size_t d = batch.head_dim, heads = batch.heads, bs = batch.block_size;
  const float scale = batch.scale;
  // Per thread: one row's scores over its keys, then its output accumulator. A task is one
  // (row, head): two passes over the keys (scores and their max, then e^(s − max) and p·v),
  // so no score is exponentiated above its row's max whatever the scores' size. Decode rows
  // have one query each, so there is no tile of queries to share the key reads among; tasks
  // go to threads as they free up, a prefill chunk's later rows seeing more keys.
  const std::size_t p_size = whole_lines(longest), acc_size = whole_lines(d);
  over_tasks_in_workspace(batch.rows * heads, p_size + acc_size, [&](std::size_t task, float* const p) {
    float* const acc = p + p_size;
    const std::size_t r = task / heads, h = task % heads;
    const RowPlace at = place_of(batch, r);
    const std::size_t keys = at.position + 1;  // causal: positions [0, position]
    const float* qr = q + (r * heads + h) * d;  // (d)

    float max = -std::numeric_limits<float>::infinity();
    for (std::size_t j0 = 0; j0 < keys; j0 += bs) {
      const std::size_t n = std::min(bs, keys - j0);
      const float* kb = k_pool + (static_cast<std::size_t>(at.table[j0 / bs]) * heads + h) * bs * d;  // (bs, d)
      for (std::size_t o = 0; o < n; ++o) {
        const float* kr = kb + o * d;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (std::size_t x = 0; x < d; ++x) dot += qr[x] * kr[x];
        p[j0 + o] = dot * scale;
        max = std::fmax(max, p[j0 + o]);
      }
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (std::size_t j = 0; j < keys; ++j) {
      p[j] = exp_poly(p[j] - max);
      sum += p[j];
    }
    std::fill(acc, acc + d, 0.0f);
    for (std::size_t j0 = 0; j0 < keys; j0 += bs) {
      const std::size_t n = std::min(bs, keys - j0);
      const float* vb = v_pool + (static_cast<std::size_t>(at.table[j0 / bs]) * heads + h) * bs * d;  // (bs, d)
      for (std::size_t o = 0; o < n; ++o) {
        const float w = p[j0 + o];
        const float* vr = vb + o * d;
#pragma omp simd
        for (std::size_t x = 0; x < d; ++x) acc[x] += w * vr[x];
      }
    }
    const float inv = 1.0f / sum;  // sum >= 1: the max's own term is e^0
    float* o = out + (r * heads + h) * d;
#pragma omp simd
    for (std::size_t x = 0; x < d; ++x) o[x] = acc[x] * inv;
  });
}

void gather_rows(const float* x, const std::int32_t* rows, float* y, std::size_t n, std::size_t channels) {
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i)
    std::copy_n(x + static_cast<std::size_t>(rows[i]) * channels, channels, y + i * channels);
}

}  // namespace aiopt::kernels::cpu
