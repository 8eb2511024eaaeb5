// The paged ragged-batch kernels on CUDA (kernels/cuda/paged_attention.hpp). Layouts as
// kernels/paged_batch.hpp. The embedding, the split into the pools and the gather are data
// movement (plus one add), so they equal the CPU bit for bit; attention equals it within fp32
// rounding (its own order of sums, and expf for the CPU's exp_poly).
#include "kernels/cuda/paged_attention.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/warp_softmax_merge.cuh"

namespace aiopt::kernels::cuda {

namespace {

constexpr int warp_size = 32;
constexpr unsigned full_mask = 0xffffffffu;

// The sequence of new row r: the largest s with q_start[s] <= r, by binary search over the
// (seqs + 1) starts; every sequence has a row, so that s is r's own.
__device__ __forceinline__ int sequence_of(const std::int32_t* q_start, int seqs, std::int64_t r) {
  int lo = 0, hi = seqs;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (q_start[mid] <= r) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Where new row r's key and value live: its sequence's table and its absolute position.
struct RowPlace {
  const std::int32_t* table;
  std::size_t position;
};
__device__ __forceinline__ RowPlace place_of(const PagedBatch& b, std::size_t r) {
  const int s = sequence_of(b.q_start, static_cast<int>(b.seqs), static_cast<std::int64_t>(r));
  const std::int32_t q_len = b.q_start[s + 1] - b.q_start[s];
  const std::size_t first = static_cast<std::size_t>(b.context[s] - q_len);  // position of row q_start[s]
  return {b.block_tables + b.table_start[s], first + (r - static_cast<std::size_t>(b.q_start[s]))};
}

// The offset in floats of (position, head h)'s row in a (blocks, heads, block_size, head_dim) pool.
__device__ __forceinline__ std::size_t pool_row(const PagedBatch& b, const std::int32_t* table, std::size_t position,
                                                std::size_t h) {
  const std::size_t block = static_cast<std::size_t>(table[position / b.block_size]);
  return ((block * b.heads + h) * b.block_size + position % b.block_size) * b.head_dim;
}

// ---- embedding, split, gather

// One block per row; threads over the channels in vectors of V. The host checks tokens and
// positions before upload; clamping keeps a bad one from reading outside wte or wpe.
template <int V>
__global__ void embedding_at_kernel(const std::int32_t* tokens, const std::int32_t* positions, const float* wte,
                                    const float* wpe, float* y, std::size_t vocab, std::size_t context,
                                    int channels) {
  const std::size_t row = blockIdx.x;
  const std::int32_t token = tokens[row], position = positions[row];
  const std::size_t id = token < 0 || static_cast<std::size_t>(token) >= vocab ? vocab - 1 : static_cast<std::size_t>(token);
  const std::size_t at =
      position < 0 || static_cast<std::size_t>(position) >= context ? context - 1 : static_cast<std::size_t>(position);
  add_row<V>(wte + id * channels, wpe + at * channels, y + row * channels, channels);
}

// One thread per V elements of qkv (rows, 3, heads, head_dim): the q part to q, the k and v parts
// to their row's slot of the pools. V divides head_dim, so a vector stays in one head's row.
template <int V>
__global__ void paged_kv_write_kernel(const float* qkv, float* q, float* k_pool, float* v_pool, PagedBatch b) {
  const std::size_t c = b.heads * b.head_dim;
  for_each_vector<V>(b.rows * 3 * c, [&](std::size_t i) {
    const std::size_t r = i / (3 * c), part = i / c % 3, within = i % c;
    const Pack<V> x = load<V>(qkv + i);
    if (part == 0) {
      store<V>(q + r * c + within, x);
      return;
    }
    const RowPlace at = place_of(b, r);
    float* pool = part == 1 ? k_pool : v_pool;
    store<V>(pool + pool_row(b, at.table, at.position, within / b.head_dim) + within % b.head_dim, x);
  });
}

// One block per output row.
template <int V>
__global__ void gather_rows_kernel(const float* x, const std::int32_t* rows, float* y, int channels) {
  const float* from = x + static_cast<std::size_t>(rows[blockIdx.x]) * channels;
  float* to = y + static_cast<std::size_t>(blockIdx.x) * channels;
  for (int j = static_cast<int>(threadIdx.x) * V; j < channels; j += static_cast<int>(blockDim.x) * V)
    store<V>(to + j, load<V>(from + j));
}

// ---- attention

// Four warps: a decode row of a few hundred keys keeps them all busy, and small blocks let many
// (row, head) blocks share an SM.
constexpr int attention_warps = 4;

__device__ __forceinline__ float dot_row(const float* q, const float* k, int n, bool vector4) {
  float dot = 0.0f;
  if (vector4) {
    for (int d = 0; d < n; d += 4) {
      const float4 a = *reinterpret_cast<const float4*>(q + d);
      const float4 c = __ldg(reinterpret_cast<const float4*>(k + d));
      dot += a.x * c.x + a.y * c.y + a.z * c.z + a.w * c.w;
    }
  } else {
    for (int d = 0; d < n; ++d) dot += q[d] * __ldg(k + d);
  }
  return dot;
}

// One block per (row, head) (blockIdx.x = row·heads + h) and slice of 32·DPL output dimensions
// (blockIdx.y); every slice computes the full scores, so head_dim is unbounded while the
// accumulators stay in registers. Each warp takes tiles of 32 keys in turn (tile w, w + W, ...):
// lane j finds key j of the tile through the block table and scores it against the whole q row,
// then the warp runs the online softmax (Milakov & Gimelshein 2018) over the tile and
// accumulates p·v, lane l owning dimensions d0 + l + 32·e, reading each value row coalesced.
// Finally the warps' (max, sum, accumulator) triples are merged in shared memory.
template <int DPL>
__global__ void __launch_bounds__(attention_warps * warp_size)
paged_attention_kernel(const float* q, const float* k_pool, const float* v_pool, float* out, PagedBatch b,
                       bool vector4) {
  constexpr int slice = warp_size * DPL;
  extern __shared__ __align__(16) float shared[];
  const int D = static_cast<int>(b.head_dim);
  const int q_floats = (D + 3) / 4 * 4;                   // keeps warp_acc 16-byte aligned
  float* q_row = shared;                                  // (head_dim), scaled
  float* warp_acc = q_row + q_floats;                     // (attention_warps, slice)
  float* warp_max = warp_acc + attention_warps * slice;   // (attention_warps)
  float* warp_sum = warp_max + attention_warps;           // (attention_warps)

  const std::size_t row = blockIdx.x / b.heads, h = blockIdx.x % b.heads;
  const int d0 = static_cast<int>(blockIdx.y) * slice;
  const RowPlace at = place_of(b, row);
  const std::size_t kv_end = at.position + 1;  // causal: positions [0, position]; key 0 always seen

  // The softmax scale folded into q: s_j = (scale·q)·k_j.
  const float* q_src = q + (row * b.heads + h) * D;
  for (int d = static_cast<int>(threadIdx.x); d < D; d += static_cast<int>(blockDim.x)) q_row[d] = q_src[d] * b.scale;
  __syncthreads();

  const int lane = static_cast<int>(threadIdx.x % warp_size);
  const int warp = static_cast<int>(threadIdx.x / warp_size);
  float max = -INFINITY, sum = 0.0f;
  float acc[DPL];
  for (int e = 0; e < DPL; ++e) acc[e] = 0.0f;

  for (std::size_t j0 = static_cast<std::size_t>(warp) * warp_size; j0 < kv_end;
       j0 += static_cast<std::size_t>(attention_warps) * warp_size) {
    const std::size_t j = j0 + lane;
    const bool seen = j < kv_end;
    // The offset of key j's row in the pools, looked up once for its k and v.
    const unsigned long long offset = seen ? pool_row(b, at.table, j, h) : 0ull;
    const float s = seen ? dot_row(q_row, k_pool + offset, D, vector4) : -INFINITY;
    // Key j0 is seen, so the tile's max and max_new are finite; the first tile's correction is
    // e^(−inf) = 0 against the empty state.
    const float max_new = fmaxf(max, warp_reduce(s, Max{}));
    const float correction = expf(max - max_new);
    const float p = expf(s - max_new);  // 0 for keys not seen
    sum = sum * correction + warp_reduce(p, Sum{});
    for (int e = 0; e < DPL; ++e) acc[e] *= correction;
    const int count = static_cast<int>(kv_end - j0 < std::size_t{warp_size} ? kv_end - j0 : std::size_t{warp_size});
    for (int jj = 0; jj < count; ++jj) {
      const float w = __shfl_sync(full_mask, p, jj);
      const float* v_row = v_pool + __shfl_sync(full_mask, offset, jj);
      for (int e = 0; e < DPL; ++e) {
        const int d = d0 + lane + warp_size * e;
        if (d < D) acc[e] += w * __ldg(v_row + d);
      }
    }
    max = max_new;
  }

  merge_warp_softmax<attention_warps, DPL>(max, sum, acc, d0, D, warp_acc, warp_max, warp_sum,
                                           out + (row * b.heads + h) * D);
}

template <int DPL>
void launch_attention(const float* q, const float* k_pool, const float* v_pool, float* out, const PagedBatch& b,
                      cudaStream_t stream) {
  constexpr int slice = warp_size * DPL;
  const std::size_t shared_bytes = ((b.head_dim + 3) / 4 * 4 + attention_warps * (slice + 2)) * sizeof(float);
  if (shared_bytes > 48 * 1024)
    throw std::invalid_argument("cuda paged_attention: head_dim " + std::to_string(b.head_dim) +
                                " needs more than 48 KiB of shared memory");
  const std::size_t blocks = b.rows * b.heads;
  const dim3 grid(row_blocks(blocks), static_cast<unsigned>((b.head_dim + slice - 1) / slice));
  // float4 loads of k rows: every row starts 16-byte aligned when head_dim is a multiple of 4.
  const bool vector4 = b.head_dim % 4 == 0 && reinterpret_cast<std::uintptr_t>(k_pool) % 16 == 0;
  paged_attention_kernel<DPL><<<grid, attention_warps * warp_size, shared_bytes, stream>>>(q, k_pool, v_pool, out, b,
                                                                                          vector4);
  CUDA_CHECK_LAUNCH();
}

// The checks a launcher can make without reading the device arrays.
void check_shape(const PagedBatch& b, const char* who) {
  if (b.heads == 0 || b.head_dim == 0 || b.block_size == 0)
    throw std::invalid_argument(std::string(who) + ": heads, head_dim and block_size must be positive");
  if (b.seqs == 0 || b.seqs > 0x7ffffffeu)
    throw std::invalid_argument(std::string(who) + ": " + std::to_string(b.seqs) + " sequences for " +
                                std::to_string(b.rows) + " rows");
  checked_width(b.head_dim, who);
}

}  // namespace

// ---- launchers

void embedding_at(const std::int32_t* tokens, const std::int32_t* positions, const float* wte, const float* wpe,
                  float* y, std::size_t rows, std::size_t vocab, std::size_t context, std::size_t channels,
                  void* stream) {
  if (rows == 0 || channels == 0) return;
  if (vocab == 0 || context == 0) throw std::invalid_argument("cuda embedding_at: an empty wte or wpe");
  const int c = checked_width(channels, "embedding_at");
  launch_vectorized(use_vector4(channels, wte, wpe, y), [&]<int V>() {
    embedding_at_kernel<V><<<row_blocks(rows), row_block_threads(channels, V), 0, as_stream(stream)>>>(
        tokens, positions, wte, wpe, y, vocab, context, c);
  });
}

void paged_kv_write(const float* qkv, float* q, float* k_pool, float* v_pool, const PagedBatch& batch, void* stream) {
  if (batch.rows == 0) return;
  check_shape(batch, "paged_kv_write");
  launch_vectorized(use_vector4(batch.head_dim, qkv, q, k_pool, v_pool), [&]<int V>() {
    paged_kv_write_kernel<V><<<elementwise_blocks(batch.rows * 3 * batch.heads * batch.head_dim / V), 256, 0,
                               as_stream(stream)>>>(qkv, q, k_pool, v_pool, batch);
  });
}

void paged_attention(const float* q, const float* k_pool, const float* v_pool, float* out, const PagedBatch& batch,
                     void* stream) {
  if (batch.rows == 0) return;
  check_shape(batch, "paged_attention");
  // Registers per lane for its output dimensions: the fewest of 1, 2, 4 that cover head_dim, and
  // slices of 128 dimensions beyond that.
  const std::size_t per_lane = (batch.head_dim + warp_size - 1) / warp_size;
  const cudaStream_t s = as_stream(stream);
  if (per_lane <= 1) {
    launch_attention<1>(q, k_pool, v_pool, out, batch, s);
  } else if (per_lane <= 2) {
    launch_attention<2>(q, k_pool, v_pool, out, batch, s);
  } else {
    launch_attention<4>(q, k_pool, v_pool, out, batch, s);
  }
}

void gather_rows(const float* x, const std::int32_t* rows, float* y, std::size_t n, std::size_t channels,
                 void* stream) {
  if (n == 0 || channels == 0) return;
  const int c = checked_width(channels, "gather_rows");
  launch_vectorized(use_vector4(channels, x, y), [&]<int V>() {
    gather_rows_kernel<V><<<row_blocks(n), row_block_threads(channels, V), 0, as_stream(stream)>>>(x, rows, y, c);
  });
}

}  // namespace aiopt::kernels::cuda
