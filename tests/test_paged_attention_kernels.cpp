// The paged ragged-batch kernels (kernels/cpu/paged_attention.hpp and its CUDA twin): attention of
// a ragged batch through shuffled block tables against the float64 reference, sequence by
// sequence, at block sizes 1, 4 and 16 and with scores near ±500; the split of qkv into q and the
// pools, read back through the tables; the embedding at explicit positions; the row gather; the
// checks made before anything is written (and by check_paged_batch alone); and ([gpu]) every CUDA
// kernel against its CPU twin.
//
// A batch mixes every kind of sequence a step of iteration-level batching holds: a prefill chunk
// from position 0, a later chunk after existing context, and decode rows (q_len 1) at contexts of
// 1, exactly a block and more. Every sequence's blocks are drawn from a shuffled pool larger than
// needed, the rest of it (and the unused slots of a sequence's last block) holding random values,
// and the tables lie apart with junk ids between them: a kernel that reads a wrong slot, block or
// table moves its output by O(0.1) and more.
//
// Attention tolerance, per output (row, head), relative to A = max |v| over the keys the row sees:
//   |got − want| <= A·(2Δ + 2(n + 2)·u + 1e-6), u = 2^-24, n the keys seen,
// Δ = (d + 2)·u·scale·max_j Σ_t |q_t·k_jt| the worst-case fp32 rounding of a score (a d-term dot
// and the scale). A score's error δ_j moves the output by Σ_j p_j·|v_j − out|·|δ_j| <= 2A·max |δ|;
// the fp32 sums over n keys (the softmax's denominator and p·v) add at most n·u relative each; the
// exponentials (exp_poly on the CPU, expf on CUDA, a few 1e-7 relative) are within the 1e-6. At
// |scores| <= √d (uniform inputs) that is about 3e-5·A; with scores near ±500 about 1e-2·A, for
// near ties where fp32 may weigh the top two keys differently (the rest is one-hot). A wrong slot
// or block, a missing mask or a softmax without its max is off by far more (or non-finite).
// CUDA against the CPU: each is within that bound of the reference, so 2× it of each other.
// Everything else is data movement and one add: bit for bit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/rng.hpp"
#include "core/threads.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/paged_attention.hpp"
#include "kernels/paged_batch.hpp"
#include "support/error_metric.hpp"
#include "support/random.hpp"
#if defined(AIOPT_HAVE_CUDA)
#include "kernels/cuda/paged_attention.hpp"
#include "support/device_copy.hpp"
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using kernels::AttentionShape;
using kernels::PagedBatch;
using test::fp32_unit_roundoff;

namespace {

// One sequence of a step: q_len new rows, context positions after the step.
struct Sequence {
  std::int32_t q_len;
  std::int32_t context;
};

// A prefill from 0, a decode at context 1, a later chunk after 33 positions, decodes at a
// multiple of 16 and past it, a chunk of one block's worth, a long decode.
const std::vector<Sequence> mixed = {{13, 13}, {1, 1}, {7, 40}, {1, 16}, {1, 37}, {4, 4}, {1, 64}, {5, 21}, {1, 100}};

// A ragged batch over a paged pool, and the sequences' keys and values in plain layout.
struct Ragged {
  std::size_t heads, head_dim, block_size, blocks;
  float scale;
  std::vector<Sequence> seqs;
  std::vector<std::int32_t> q_start, context, table_start, tables;
  std::vector<float> q;                     // (rows, heads, head_dim)
  std::vector<std::vector<float>> k, v;     // per sequence: (heads, context, head_dim)
  std::vector<float> k_pool, v_pool;        // (blocks, heads, block_size, head_dim)

  std::size_t rows() const { return static_cast<std::size_t>(q_start.back()); }
  PagedBatch batch() const {
    return {seqs.size(), rows(),         heads,         head_dim,      block_size, blocks, scale,
            q_start.data(), context.data(), table_start.data(), tables.data()};
  }
  // The offset of (sequence s, position p, head h)'s row in the pools, by the layout's definition.
  std::size_t slot(std::size_t s, std::size_t p, std::size_t h) const {
    const std::size_t block = static_cast<std::size_t>(tables[static_cast<std::size_t>(table_start[s]) + p / block_size]);
    return ((block * heads + h) * block_size + p % block_size) * head_dim;
  }
};

// q and k uniform in [-qk, qk], v in [-1, 1]; the pool's blocks shuffled, a third more than
// needed, everything not a sequence's key or value random too.
Ragged make_ragged(const std::vector<Sequence>& seqs, std::size_t heads, std::size_t head_dim, std::size_t block_size,
                   std::uint64_t seed, float qk = 1.0f) {
  rng::Stream r(seed);
  Ragged g;
  g.heads = heads;
  g.head_dim = head_dim;
  g.block_size = block_size;
  g.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  g.seqs = seqs;
  std::size_t needed = 0;
  g.q_start.push_back(0);
  for (const Sequence& s : seqs) {
    g.q_start.push_back(g.q_start.back() + s.q_len);
    g.context.push_back(s.context);
    needed += (static_cast<std::size_t>(s.context) + block_size - 1) / block_size;
  }
  g.blocks = needed + needed / 3 + 2;
  std::vector<std::int32_t> ids(g.blocks);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>(i);
  for (std::size_t i = ids.size() - 1; i > 0; --i) std::swap(ids[i], ids[r.next_bits() % (i + 1)]);
  std::size_t next_id = 0;
  for (const Sequence& s : seqs) {
    // Junk between the tables: ids no table may reach.
    g.tables.push_back(std::numeric_limits<std::int32_t>::max());
    g.tables.push_back(-7);
    g.table_start.push_back(static_cast<std::int32_t>(g.tables.size()));
    for (std::size_t b = 0; b < (static_cast<std::size_t>(s.context) + block_size - 1) / block_size; ++b)
      g.tables.push_back(ids[next_id++]);
  }
  g.tables.push_back(-1);

  const std::size_t pool = g.blocks * heads * block_size * head_dim;
  g.k_pool.resize(pool);
  g.v_pool.resize(pool);
  for (std::size_t i = 0; i < pool; ++i) {
    g.k_pool[i] = r.uniform(-qk, qk);
    g.v_pool[i] = r.uniform(-1.0f, 1.0f);
  }
  g.q.resize(g.rows() * heads * head_dim);
  for (float& x : g.q) x = r.uniform(-qk, qk);
  for (std::size_t s = 0; s < seqs.size(); ++s) {
    const std::size_t n = static_cast<std::size_t>(seqs[s].context);
    g.k.emplace_back(heads * n * head_dim);
    g.v.emplace_back(heads * n * head_dim);
    for (std::size_t h = 0; h < heads; ++h)
      for (std::size_t p = 0; p < n; ++p)
        for (std::size_t t = 0; t < head_dim; ++t) {
          const float kx = r.uniform(-qk, qk), vx = r.uniform(-1.0f, 1.0f);
          g.k[s][(h * n + p) * head_dim + t] = kx;
          g.v[s][(h * n + p) * head_dim + t] = vx;
          g.k_pool[g.slot(s, p, h) + t] = kx;
          g.v_pool[g.slot(s, p, h) + t] = vx;
        }
  }
  return g;
}

// The float64 reference, sequence by sequence, in the kernels' (rows, heads, head_dim) layout,
// with each output's tolerance (the header's bound) and the largest |score| met.
struct Reference {
  std::vector<double> out, tol;
  double max_score = 0.0;
};
Reference reference(const Ragged& g) {
  const std::size_t H = g.heads, d = g.head_dim;
  Reference ref;
  ref.out.resize(g.q.size());
  ref.tol.resize(g.q.size());
  for (std::size_t s = 0; s < g.seqs.size(); ++s) {
    const std::size_t q_len = static_cast<std::size_t>(g.seqs[s].q_len), n = static_cast<std::size_t>(g.seqs[s].context);
    const std::size_t r0 = static_cast<std::size_t>(g.q_start[s]);
    const AttentionShape shape{1, H, q_len, n, d, n, n - q_len, true, g.scale};
    std::vector<float> q(H * q_len * d);  // (1, H, q_len, d)
    for (std::size_t i = 0; i < q_len; ++i)
      for (std::size_t h = 0; h < H; ++h)
        std::copy_n(g.q.data() + ((r0 + i) * H + h) * d, d, q.data() + (h * q_len + i) * d);
    std::vector<double> out(q.size());
    cpu::attention_reference(q.data(), g.k[s].data(), g.v[s].data(), out.data(), shape);
    for (std::size_t i = 0; i < q_len; ++i)
      for (std::size_t h = 0; h < H; ++h) {
        const std::size_t seen = n - q_len + i + 1;
        const float* qi = q.data() + (h * q_len + i) * d;
        double abs_dot = 0.0, v_max = 0.0;
        for (std::size_t j = 0; j < seen; ++j) {
          const float* kj = g.k[s].data() + (h * n + j) * d;
          double a = 0.0, dot = 0.0;
          for (std::size_t t = 0; t < d; ++t) {
            a += std::fabs(static_cast<double>(qi[t]) * kj[t]);
            dot += static_cast<double>(qi[t]) * kj[t];
          }
          abs_dot = std::max(abs_dot, a);
          ref.max_score = std::max(ref.max_score, std::fabs(dot * g.scale));
          for (std::size_t t = 0; t < d; ++t) v_max = std::max(v_max, std::fabs(static_cast<double>(g.v[s][(h * n + j) * d + t])));
        }
        const double u = fp32_unit_roundoff;
        const double delta = static_cast<double>(d + 2) * u * g.scale * abs_dot;
        const double tol = v_max * (2.0 * delta + 2.0 * static_cast<double>(seen + 2) * u + 1e-6);
        for (std::size_t t = 0; t < d; ++t) {
          ref.out[((r0 + i) * H + h) * d + t] = out[(h * q_len + i) * d + t];
          ref.tol[((r0 + i) * H + h) * d + t] = tol;
        }
      }
  }
  return ref;
}

std::vector<float> cpu_attention(const Ragged& g) {
  std::vector<float> out(g.q.size(), std::numeric_limits<float>::quiet_NaN());
  cpu::paged_attention(g.q.data(), g.k_pool.data(), g.v_pool.data(), out.data(), g.batch());
  return out;
}

// The worst |got − want| / tol, for the report of how close a passing case came.
double worst_ratio(const std::vector<float>& got, const Reference& ref) {
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - ref.out[i]) / ref.tol[i]);
  return worst;
}

// qkv (rows, 3, heads, head_dim) for the batch's new rows, random.
std::vector<float> random_qkv(const Ragged& g, std::uint64_t seed) {
  return test::random_vector(g.rows() * 3 * g.heads * g.head_dim, seed);
}

// What paged_kv_write must leave: q the q parts, the pools as before but for the new rows' slots.
struct Written {
  std::vector<float> q, k_pool, v_pool;
};
Written expected_write(const Ragged& g, const std::vector<float>& qkv) {
  const std::size_t H = g.heads, d = g.head_dim, c = H * d;
  Written w{std::vector<float>(g.rows() * c), g.k_pool, g.v_pool};
  for (std::size_t s = 0; s < g.seqs.size(); ++s)
    for (std::int32_t r = g.q_start[s]; r < g.q_start[s + 1]; ++r) {
      const std::size_t row = static_cast<std::size_t>(r);
      const std::size_t p = static_cast<std::size_t>(g.context[s] - g.seqs[s].q_len + (r - g.q_start[s]));
      std::copy_n(qkv.data() + row * 3 * c, c, w.q.data() + row * c);
      for (std::size_t h = 0; h < H; ++h) {
        std::copy_n(qkv.data() + row * 3 * c + c + h * d, d, w.k_pool.data() + g.slot(s, p, h));
        std::copy_n(qkv.data() + row * 3 * c + 2 * c + h * d, d, w.v_pool.data() + g.slot(s, p, h));
      }
    }
  return w;
}

std::size_t differing_bits(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return n;
}

struct ThreadsRestored {
  int saved = threads();
  ~ThreadsRestored() { set_threads(saved); }
};

}  // namespace

TEST_CASE("paged_attention matches the float64 reference on a ragged batch through shuffled tables",
          "[paged_attention]") {
  for (const std::size_t block_size : {1, 4, 16}) {
    for (const std::size_t head_dim : {64, 20}) {
      INFO("block_size " << block_size << " head_dim " << head_dim);
      const Ragged g = make_ragged(mixed, 3, head_dim, block_size, 100 + block_size + head_dim);
      const Reference ref = reference(g);
      const std::vector<float> got = cpu_attention(g);
      INFO("worst error / tolerance " << worst_ratio(got, ref));
      CHECK(test::outside(got, ref.out, ref.tol) == 0);
      // The bound is tight enough to tell a row that ignored its scores (the mean of its values).
      CHECK(*std::max_element(ref.tol.begin(), ref.tol.end()) < 1e-4);
    }
  }
}

TEST_CASE("paged_attention stays within the bound at scores near 500", "[paged_attention]") {
  for (const std::size_t block_size : {1, 16}) {
    INFO("block_size " << block_size);
    const Ragged g = make_ragged(mixed, 2, 64, block_size, 7 + block_size, 25.0f);
    const Reference ref = reference(g);
    INFO("largest |score| " << ref.max_score);
    REQUIRE(ref.max_score > 300.0);
    REQUIRE(ref.max_score < 2000.0);
    const std::vector<float> got = cpu_attention(g);
    INFO("worst error / tolerance " << worst_ratio(got, ref));
    CHECK(test::outside(got, ref.out, ref.tol) == 0);
  }
}

TEST_CASE("paged_attention gives the same bits on 1 and 2 threads", "[paged_attention]") {
  const ThreadsRestored restore;
  const Ragged g = make_ragged(mixed, 4, 32, 4, 21);
  set_threads(1);
  const std::vector<float> one = cpu_attention(g);
  set_threads(2);
  const std::vector<float> two = cpu_attention(g);
  CHECK(differing_bits(one, two) == 0);
}

TEST_CASE("paged_kv_write puts q and every new key and value where the table says and nothing else",
          "[paged_attention]") {
  for (const std::size_t block_size : {1, 4, 16}) {
    INFO("block_size " << block_size);
    Ragged g = make_ragged(mixed, 3, 24, block_size, 300 + block_size);
    const std::vector<float> qkv = random_qkv(g, 400 + block_size);
    const Written want = expected_write(g, qkv);
    std::vector<float> q(g.rows() * g.heads * g.head_dim, std::numeric_limits<float>::quiet_NaN());
    cpu::paged_kv_write(qkv.data(), q.data(), g.k_pool.data(), g.v_pool.data(), g.batch());
    CHECK(differing_bits(q, want.q) == 0);
    CHECK(differing_bits(g.k_pool, want.k_pool) == 0);
    CHECK(differing_bits(g.v_pool, want.v_pool) == 0);
    // Read back through the tables: row r of sequence s at position context − q_len + i.
    const std::size_t H = g.heads, d = g.head_dim, c = H * d;
    std::size_t mismatches = 0, changed = 0;
    // The older positions of a sequence keep their keys (position 0 of head 1 stands for them).
    for (std::size_t s = 0; s < g.seqs.size(); ++s)
      if (g.context[s] > g.seqs[s].q_len) {
        const std::size_t n = static_cast<std::size_t>(g.context[s]);
        for (std::size_t t = 0; t < d; ++t) changed += g.k_pool[g.slot(s, 0, 1) + t] != g.k[s][(1 * n + 0) * d + t];
      }
    for (std::size_t s = 0; s < g.seqs.size(); ++s)
      for (std::int32_t i = 0; i < g.seqs[s].q_len; ++i) {
        const std::size_t row = static_cast<std::size_t>(g.q_start[s] + i);
        const std::size_t p = static_cast<std::size_t>(g.context[s] - g.seqs[s].q_len + i);
        for (std::size_t h = 0; h < H; ++h)
          for (std::size_t t = 0; t < d; ++t) {
            mismatches += g.k_pool[g.slot(s, p, h) + t] != qkv[row * 3 * c + c + h * d + t];
            mismatches += g.v_pool[g.slot(s, p, h) + t] != qkv[row * 3 * c + 2 * c + h * d + t];
            mismatches += q[row * c + h * d + t] != qkv[row * 3 * c + h * d + t];
          }
      }
    CHECK(mismatches == 0);
    CHECK(changed == 0);
  }
}

TEST_CASE("a prefill chunk written by paged_kv_write attends to itself and the context before it",
          "[paged_attention]") {
  // The keys and values of the new rows come from qkv; paged_attention then reads them back
  // through the same table, and the reference sees the same sequence in plain layout.
  Ragged g = make_ragged(mixed, 2, 16, 4, 55);
  std::vector<float> qkv = random_qkv(g, 56);
  const std::size_t H = g.heads, d = g.head_dim, c = H * d;
  for (std::size_t s = 0; s < g.seqs.size(); ++s) {
    const std::size_t n = static_cast<std::size_t>(g.context[s]);
    for (std::int32_t i = 0; i < g.seqs[s].q_len; ++i) {
      const std::size_t row = static_cast<std::size_t>(g.q_start[s] + i);
      const std::size_t p = n - static_cast<std::size_t>(g.seqs[s].q_len) + static_cast<std::size_t>(i);
      for (std::size_t h = 0; h < H; ++h)
        for (std::size_t t = 0; t < d; ++t) {
          g.k[s][(h * n + p) * d + t] = qkv[row * 3 * c + c + h * d + t];
          g.v[s][(h * n + p) * d + t] = qkv[row * 3 * c + 2 * c + h * d + t];
        }
    }
  }
  cpu::paged_kv_write(qkv.data(), g.q.data(), g.k_pool.data(), g.v_pool.data(), g.batch());
  const Reference ref = reference(g);
  const std::vector<float> got = cpu_attention(g);
  INFO("worst error / tolerance " << worst_ratio(got, ref));
  CHECK(test::outside(got, ref.out, ref.tol) == 0);
}

TEST_CASE("paged kernels reject a bad batch before writing anything", "[paged_attention]") {
  Ragged g = make_ragged(mixed, 2, 8, 4, 77);
  const std::vector<float> qkv = random_qkv(g, 78);
  const std::vector<float> k_before = g.k_pool, v_before = g.v_pool;
  const float sentinel = 12345.0f;
  std::vector<float> out(g.q.size(), sentinel), q(g.q.size(), sentinel);
  auto untouched = [&] {
    CHECK(std::count(out.begin(), out.end(), sentinel) == static_cast<std::ptrdiff_t>(out.size()));
    CHECK(std::count(q.begin(), q.end(), sentinel) == static_cast<std::ptrdiff_t>(q.size()));
    CHECK(differing_bits(g.k_pool, k_before) == 0);
    CHECK(differing_bits(g.v_pool, v_before) == 0);
  };
  auto both_throw = [&]<class E>(const PagedBatch& b) {
    CHECK_THROWS_AS(cpu::paged_attention(g.q.data(), g.k_pool.data(), g.v_pool.data(), out.data(), b), E);
    CHECK_THROWS_AS(cpu::paged_kv_write(qkv.data(), q.data(), g.k_pool.data(), g.v_pool.data(), b), E);
    CHECK_THROWS_AS(cpu::check_paged_batch(b), E);
    untouched();
  };
  const std::size_t last = static_cast<std::size_t>(g.table_start.back()) + 2;  // the last sequence's third block
  SECTION("a block id past the pool in the last sequence's table") {
    g.tables[last] = static_cast<std::int32_t>(g.blocks);
    both_throw.operator()<std::out_of_range>(g.batch());
  }
  SECTION("a negative block id") {
    g.tables[last] = -1;
    both_throw.operator()<std::out_of_range>(g.batch());
  }
  SECTION("a context shorter than its new rows") {
    g.context[0] = g.seqs[0].q_len - 1;
    both_throw.operator()<std::invalid_argument>(g.batch());
  }
  SECTION("a sequence with no new row") {
    g.q_start[2] = g.q_start[1];
    both_throw.operator()<std::invalid_argument>(g.batch());
  }
  SECTION("rows other than q_start[seqs]") {
    PagedBatch b = g.batch();
    b.rows -= 1;
    both_throw.operator()<std::invalid_argument>(b);
  }
  SECTION("a zero block size") {
    PagedBatch b = g.batch();
    b.block_size = 0;
    both_throw.operator()<std::invalid_argument>(b);
  }
  SECTION("the unchanged batch passes") {
    CHECK_NOTHROW(cpu::check_paged_batch(g.batch()));
    cpu::paged_attention(g.q.data(), g.k_pool.data(), g.v_pool.data(), out.data(), g.batch());
    CHECK(std::count(out.begin(), out.end(), sentinel) == 0);
  }
}

TEST_CASE("embedding_at sums the token and position rows exactly and checks both first", "[paged_attention]") {
  const std::size_t vocab = 50, context = 32, channels = 24, rows = 40;
  const std::vector<float> wte = test::random_vector(vocab * channels, 1), wpe = test::random_vector(context * channels, 2);
  rng::Stream r(3);
  std::vector<std::int32_t> tokens(rows), positions(rows);
  for (std::size_t i = 0; i < rows; ++i) {
    tokens[i] = static_cast<std::int32_t>(r.next_bits() % vocab);
    positions[i] = static_cast<std::int32_t>(r.next_bits() % context);
  }
  tokens[0] = static_cast<std::int32_t>(vocab - 1);
  positions[1] = static_cast<std::int32_t>(context - 1);
  std::vector<float> y(rows * channels), want(rows * channels);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t c = 0; c < channels; ++c)
      want[i * channels + c] = wte[static_cast<std::size_t>(tokens[i]) * channels + c] +
                               wpe[static_cast<std::size_t>(positions[i]) * channels + c];
  cpu::embedding_at(tokens.data(), positions.data(), wte.data(), wpe.data(), y.data(), rows, vocab, context, channels);
  CHECK(differing_bits(y, want) == 0);

  const float sentinel = -3.0f;
  std::vector<float> untouched(rows * channels, sentinel);
  for (const auto& [token, position] : std::vector<std::pair<std::int32_t, std::int32_t>>{
           {static_cast<std::int32_t>(vocab), 0}, {-1, 0}, {0, static_cast<std::int32_t>(context)}, {0, -1}}) {
    INFO("token " << token << " position " << position << " in the last row");
    std::vector<std::int32_t> t = tokens, p = positions;
    t.back() = token;
    p.back() = position;
    std::vector<float> out = untouched;
    CHECK_THROWS_AS(cpu::embedding_at(t.data(), p.data(), wte.data(), wpe.data(), out.data(), rows, vocab, context,
                                      channels),
                    std::out_of_range);
    CHECK(differing_bits(out, untouched) == 0);
  }
}

TEST_CASE("gather_rows copies the chosen rows exactly", "[paged_attention]") {
  const std::size_t channels = 13, n = 9;
  const std::vector<float> x = test::random_vector(20 * channels, 9);
  const std::vector<std::int32_t> rows = {19, 0, 3, 3, 12, 7, 1, 18, 0};
  std::vector<float> y(n * channels, 0.0f), want(n * channels);
  for (std::size_t i = 0; i < n; ++i)
    std::copy_n(x.data() + static_cast<std::size_t>(rows[i]) * channels, channels, want.data() + i * channels);
  cpu::gather_rows(x.data(), rows.data(), y.data(), n, channels);
  CHECK(differing_bits(y, want) == 0);
}

#if defined(AIOPT_HAVE_CUDA)
namespace {

namespace gpu = aiopt::kernels::cuda;
using test::download;
using test::upload;

// A ragged batch's tables and pools on the device.
struct DeviceRagged {
  memory::Buffer<std::int32_t> q_start, context, table_start, tables;
  memory::Buffer<float> q, k_pool, v_pool;
  PagedBatch batch;

  explicit DeviceRagged(const Ragged& g)
      : q_start(upload(g.q_start)), context(upload(g.context)), table_start(upload(g.table_start)),
        tables(upload(g.tables)), q(upload(g.q)), k_pool(upload(g.k_pool)), v_pool(upload(g.v_pool)),
        batch(g.batch()) {
    batch.q_start = q_start.data();
    batch.context = context.data();
    batch.table_start = table_start.data();
    batch.block_tables = tables.data();
  }
};

// Long decodes beside the mixed batch: up to 1024 positions, the longest a model's context.
const std::vector<Sequence> long_decodes = {{1, 1024}, {3, 700}, {1, 513}, {16, 16}, {1, 2}};

}  // namespace

TEST_CASE("cuda paged_attention matches the CPU and the float64 reference", "[paged_attention][gpu]") {
  struct Case {
    const std::vector<Sequence>* seqs;
    std::size_t heads, head_dim, block_size;
    float qk;
  };
  const std::vector<Case> cases = {
      {&mixed, 3, 64, 1, 1.0f},          {&mixed, 3, 64, 16, 1.0f},        {&mixed, 4, 32, 1, 1.0f},
      {&mixed, 4, 32, 16, 1.0f},         {&mixed, 2, 64, 16, 25.0f},       {&mixed, 2, 32, 1, 25.0f},
      {&long_decodes, 2, 64, 16, 1.0f},  {&long_decodes, 2, 128, 16, 1.0f}, {&long_decodes, 2, 64, 1, 25.0f},
      {&mixed, 2, 20, 4, 1.0f},          {&mixed, 2, 160, 4, 1.0f},        {&mixed, 2, 50, 16, 1.0f},
  };
  for (const Case& c : cases) {
    INFO("heads " << c.heads << " head_dim " << c.head_dim << " block_size " << c.block_size << " q, k in ±" << c.qk
                   << " first context " << c.seqs->front().context);
    const Ragged g = make_ragged(*c.seqs, c.heads, c.head_dim, c.block_size, 900 + c.head_dim + c.block_size, c.qk);
    const Reference ref = reference(g);
    INFO("largest |score| " << ref.max_score);
    const std::vector<float> host = cpu_attention(g);
    const DeviceRagged dev(g);
    memory::Buffer<float> out(Device::cuda(), g.q.size());
    gpu::paged_attention(dev.q.data(), dev.k_pool.data(), dev.v_pool.data(), out.data(), dev.batch, nullptr);
    const std::vector<float> got = download(out);
    INFO("worst error / tolerance: cuda " << worst_ratio(got, ref) << ", cpu " << worst_ratio(host, ref));
    CHECK(test::outside(got, ref.out, ref.tol) == 0);
    std::vector<double> twice(ref.tol.size());
    for (std::size_t i = 0; i < twice.size(); ++i) twice[i] = 2.0 * ref.tol[i];
    CHECK(test::outside(got, host, twice) == 0);
  }
}

TEST_CASE("cuda paged_kv_write equals the CPU's bit for bit", "[paged_attention][gpu]") {
  for (const std::size_t head_dim : {64, 32, 30}) {
    for (const std::size_t block_size : {1, 16}) {
      INFO("head_dim " << head_dim << " block_size " << block_size);
      Ragged g = make_ragged(mixed, 3, head_dim, block_size, 1200 + head_dim + block_size);
      const std::vector<float> qkv = random_qkv(g, 1300 + head_dim);
      DeviceRagged dev(g);
      const memory::Buffer<float> qkv_dev = upload(qkv);
      gpu::paged_kv_write(qkv_dev.data(), dev.q.data(), dev.k_pool.data(), dev.v_pool.data(), dev.batch, nullptr);
      std::vector<float> q(g.q.size());
      cpu::paged_kv_write(qkv.data(), q.data(), g.k_pool.data(), g.v_pool.data(), g.batch());
      CHECK(differing_bits(download(dev.q), q) == 0);
      CHECK(differing_bits(download(dev.k_pool), g.k_pool) == 0);
      CHECK(differing_bits(download(dev.v_pool), g.v_pool) == 0);
    }
  }
}

TEST_CASE("cuda embedding_at and gather_rows equal the CPU's bit for bit", "[paged_attention][gpu]") {
  for (const std::size_t channels : {24, 10}) {
    INFO("channels " << channels);
    const std::size_t vocab = 50, context = 32, rows = 40;
    const std::vector<float> wte = test::random_vector(vocab * channels, 11);
    const std::vector<float> wpe = test::random_vector(context * channels, 12);
    rng::Stream r(13);
    std::vector<std::int32_t> tokens(rows), positions(rows);
    for (std::size_t i = 0; i < rows; ++i) {
      tokens[i] = static_cast<std::int32_t>(r.next_bits() % vocab);
      positions[i] = static_cast<std::int32_t>(r.next_bits() % context);
    }
    std::vector<float> want(rows * channels);
    cpu::embedding_at(tokens.data(), positions.data(), wte.data(), wpe.data(), want.data(), rows, vocab, context,
                      channels);
    const auto t = upload(tokens), p = upload(positions);
    const auto wte_dev = upload(wte), wpe_dev = upload(wpe);
    memory::Buffer<float> y(Device::cuda(), rows * channels);
    gpu::embedding_at(t.data(), p.data(), wte_dev.data(), wpe_dev.data(), y.data(), rows, vocab, context, channels,
                      nullptr);
    CHECK(differing_bits(download(y), want) == 0);

    // Out-of-range indices on the device are clamped to the last row: no read outside the tables.
    std::vector<std::int32_t> bad_tokens = tokens, bad_positions = positions;
    bad_tokens[0] = static_cast<std::int32_t>(vocab) + 5;
    bad_positions[0] = -4;
    const auto bt = upload(bad_tokens), bp = upload(bad_positions);
    gpu::embedding_at(bt.data(), bp.data(), wte_dev.data(), wpe_dev.data(), y.data(), rows, vocab, context, channels,
                      nullptr);
    const std::vector<float> clamped = download(y);
    std::size_t off = 0;
    for (std::size_t c = 0; c < channels; ++c)
      off += clamped[c] != wte[(vocab - 1) * channels + c] + wpe[(context - 1) * channels + c];
    CHECK(off == 0);

    const std::vector<std::int32_t> picks = {39, 0, 5, 5, 20, 1};
    std::vector<float> gathered(picks.size() * channels);
    cpu::gather_rows(want.data(), picks.data(), gathered.data(), picks.size(), channels);
    const auto x_dev = upload(want);
    const auto picks_dev = upload(picks);
    memory::Buffer<float> g_dev(Device::cuda(), picks.size() * channels);
    gpu::gather_rows(x_dev.data(), picks_dev.data(), g_dev.data(), picks.size(), channels, nullptr);
    CHECK(differing_bits(download(g_dev), gathered) == 0);
  }
}
#endif
