// The core tensor: dtype names and sizes, the f16 and bf16 conversions (scalar against a plain
// reference, bulk against scalar), and Tensor's layout, type checks, memory and copies.
// Random inputs use a fresh seed each run, printed on failure.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda_runtime.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/half.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"

#ifdef AIOPT_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"
#endif

using namespace aiopt;

namespace {

std::uint64_t fresh_seed() { return (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}(); }

std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }
float float_of(std::uint32_t u) { return std::bit_cast<float>(u); }

// ---- plain references: values from the format definitions, rounding by comparing distances

// The value of the non-negative finite f16 with bits `h` (h <= 0x7bff); 0x7c00 gives 2^16, the
// first magnitude past the largest f16, which is where rounding to +inf starts.
double f16_magnitude(std::uint16_t h) {
  const int e = h >> 10, m = h & 0x3ff;
  if (e == 0) return std::ldexp(m, -24);
  return std::ldexp(1024 + m, e - 25);
}

// The same for bf16: h <= 0x7f7f finite, 0x7f80 gives 2^128.
double bf16_magnitude(std::uint16_t h) {
  const int e = h >> 7, m = h & 0x7f;
  if (e == 0) return std::ldexp(m, -133);
  return std::ldexp(128 + m, e - 134);
}

// Nearest of the consecutive magnitudes below and above `x`, ties to the even bit pattern.
std::uint16_t nearest(double x, std::uint16_t below, double below_value, double above_value) {
  const double down = x - below_value, up = above_value - x;
  if (down < up || (down == up && (below & 1u) == 0)) return below;
  return static_cast<std::uint16_t>(below + 1);
}

// f32 -> f16 by searching the ordered f16 magnitudes; x is not NaN.
std::uint16_t reference_f16(float x) {
  const auto sign = static_cast<std::uint16_t>(std::signbit(x) ? 0x8000u : 0u);
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 65536.0) return sign | 0x7c00u;
  std::uint16_t lo = 0, hi = 0x7c00;  // f16_magnitude(lo) <= a < f16_magnitude(hi)
  while (hi - lo > 1) {
    const auto mid = static_cast<std::uint16_t>((lo + hi) / 2);
    (f16_magnitude(mid) <= a ? lo : hi) = mid;
  }
  return sign | nearest(a, lo, f16_magnitude(lo), f16_magnitude(hi));
}

// f32 -> bf16: the two bf16 around x are its bits truncated and the next pattern up; x not NaN.
std::uint16_t reference_bf16(float x) {
  const auto sign = static_cast<std::uint16_t>(std::signbit(x) ? 0x8000u : 0u);
  const auto lo = static_cast<std::uint16_t>((bits_of(x) & 0x7fffffffu) >> 16);
  if (lo == 0x7f80u) return sign | lo;  // inf
  const double a = std::fabs(static_cast<double>(x));
  return sign | nearest(a, lo, bf16_magnitude(lo), bf16_magnitude(static_cast<std::uint16_t>(lo + 1)));
}

bool f16_is_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }
bool bf16_is_nan(std::uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0; }

// Floats of every kind for the rounding tests: random bit patterns (NaN, inf, subnormals
// included), magnitudes spread over the f16 range and past it, and exact ties between
// neighbouring f16 and bf16 values (normal and subnormal).
std::vector<float> rounding_inputs(std::uint64_t seed) {
  rng::Stream s(seed);
  std::vector<float> v;
  for (int i = 0; i < 200000; ++i) v.push_back(float_of(static_cast<std::uint32_t>(s.next_bits())));
  for (int i = 0; i < 200000; ++i) {
    const float x = std::ldexp(1.0f + s.uniform(), static_cast<int>(s.next_bits() % 48) - 30);  // 2^-30 .. 2^18
    v.push_back(s.next_bits() & 1 ? -x : x);
  }
  for (int i = 0; i < 100000; ++i) {
    const auto h = static_cast<std::uint16_t>(s.next_bits() % 0x7bff);
    v.push_back(static_cast<float>((f16_magnitude(h) + f16_magnitude(static_cast<std::uint16_t>(h + 1))) / 2));
    const auto b = static_cast<std::uint16_t>(s.next_bits() % 0x7f7f);
    v.push_back(float_of((static_cast<std::uint32_t>(b) << 16) | 0x8000u));
  }
  v.push_back(65504.0f);
  v.push_back(65519.996f);
  v.push_back(65520.0f);
  v.push_back(std::numeric_limits<float>::max());
  v.push_back(std::numeric_limits<float>::denorm_min());
  v.push_back(-0.0f);
  return v;
}

std::vector<float> random_normal_floats(std::size_t n, std::uint64_t seed) {
  rng::Stream s(seed);
  std::vector<float> v(n);
  for (float& x : v) {
    const float m = std::ldexp(1.0f + s.uniform(), static_cast<int>(s.next_bits() % 250) - 125);
    x = s.next_bits() & 1 ? -m : m;
  }
  return v;
}

}  // namespace

// ---- dtypes

TEST_CASE("dtypes have names, bits and storage sizes", "[tensor][dtype]") {
  const DType all[] = {DType::f32, DType::f16, DType::bf16, DType::i8, DType::i4};
  const char* names[] = {"f32", "f16", "bf16", "i8", "i4"};
  const int widths[] = {32, 16, 16, 8, 4};
  for (int i = 0; i < 5; ++i) {
    CHECK(to_string(all[i]) == names[i]);
    CHECK(parse_dtype(names[i]) == all[i]);
    CHECK(bits(all[i]) == widths[i]);
  }
  CHECK(storage_bytes(DType::f32, 3) == 12);
  CHECK(storage_bytes(DType::bf16, 3) == 6);
  CHECK(storage_bytes(DType::i8, 3) == 3);
  CHECK(storage_bytes(DType::i4, 0) == 0);
  CHECK(storage_bytes(DType::i4, 1) == 1);
  CHECK(storage_bytes(DType::i4, 7) == 4);
  CHECK(storage_bytes(DType::i4, 8) == 4);
}

TEST_CASE("an unknown dtype names the value, the allowed ones and the likely one", "[tensor][dtype]") {
  CHECK_THROWS_MATCHES(parse_dtype("bf61"), InputError,
                       Catch::Message("dtype 'bf61' is unknown; did you mean 'bf16'?; allowed: f32, f16, bf16, i8, i4"));
  CHECK_THROWS_MATCHES(parse_dtype("float64"), InputError,
                       Catch::Message("dtype 'float64' is unknown; allowed: f32, f16, bf16, i8, i4"));
  CHECK_THROWS_AS(parse_dtype(""), InputError);
}

// ---- f16

TEST_CASE("every f16 widens to its exact value and narrows back to itself", "[tensor][half]") {
  for (std::uint32_t i = 0; i <= 0xffff; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    const float f = f16_to_float(h);
    INFO("f16 bits 0x" << std::hex << i);
    if (f16_is_nan(h)) {
      // NaN: sign and payload kept, made quiet.
      REQUIRE(std::isnan(f));
      REQUIRE(bits_of(f) == ((static_cast<std::uint32_t>(h & 0x8000u) << 16) | 0x7fc00000u |
                             (static_cast<std::uint32_t>(h & 0x3ffu) << 13)));
      REQUIRE(float_to_f16(f) == (h | 0x0200u));
      continue;
    }
    const double magnitude = (h & 0x7fffu) == 0x7c00u ? INFINITY : f16_magnitude(h & 0x7fffu);
    REQUIRE(static_cast<double>(f) == ((h & 0x8000u) ? -magnitude : magnitude));
    REQUIRE(std::signbit(f) == ((h & 0x8000u) != 0));
    REQUIRE(float_to_f16(f) == h);
  }
}

TEST_CASE("f32 to f16 rounds to nearest even, with subnormals, overflow to inf and quiet NaN", "[tensor][half]") {
  const std::uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::size_t nans = 0, infs = 0, subnormals = 0;
  for (float x : rounding_inputs(seed)) {
    INFO("f32 bits 0x" << std::hex << bits_of(x));
    const std::uint16_t h = float_to_f16(x);
    if (std::isnan(x)) {
      ++nans;
      REQUIRE(f16_is_nan(h));
      REQUIRE((h & 0x0200u) != 0);
      REQUIRE(((h & 0x8000u) != 0) == std::signbit(x));
      continue;
    }
    REQUIRE(h == reference_f16(x));
    infs += (h & 0x7fffu) == 0x7c00u;
    subnormals += (h & 0x7c00u) == 0 && (h & 0x3ffu) != 0;
  }
  // The inputs reached every kind of result.
  CHECK(nans > 0);
  CHECK(infs > 0);
  CHECK(subnormals > 0);
  CHECK(float_to_f16(65519.996f) == 0x7bff);  // just below the midpoint to inf
  CHECK(float_to_f16(65520.0f) == 0x7c00);    // the midpoint rounds to inf (the even side)
  CHECK(float_to_f16(std::ldexp(1.0f, -25)) == 0x0000);                 // half the smallest subnormal: tie to 0
  CHECK(float_to_f16(std::ldexp(3.0f, -25)) == 0x0002);                 // 1.5 units: tie to 2
  CHECK(float_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
}

// ---- bf16

TEST_CASE("every bf16 widens to its exact value and narrows back to itself", "[tensor][half]") {
  for (std::uint32_t i = 0; i <= 0xffff; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    const float f = bf16_to_float(h);
    INFO("bf16 bits 0x" << std::hex << i);
    if (bf16_is_nan(h)) {
      REQUIRE(std::isnan(f));
      REQUIRE(float_to_bf16(f) == (h | 0x0040u));
      continue;
    }
    const double magnitude = (h & 0x7fffu) == 0x7f80u ? INFINITY : bf16_magnitude(h & 0x7fffu);
    REQUIRE(static_cast<double>(f) == ((h & 0x8000u) ? -magnitude : magnitude));
    REQUIRE(std::signbit(f) == ((h & 0x8000u) != 0));
    REQUIRE(float_to_bf16(f) == h);
  }
}

TEST_CASE("f32 to bf16 rounds to nearest even, with subnormals, overflow to inf and quiet NaN", "[tensor][half]") {
  const std::uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  std::size_t nans = 0, subnormals = 0;
  for (float x : rounding_inputs(seed)) {
    INFO("f32 bits 0x" << std::hex << bits_of(x));
    const std::uint16_t h = float_to_bf16(x);
    if (std::isnan(x)) {
      ++nans;
      REQUIRE(bf16_is_nan(h));
      REQUIRE((h & 0x0040u) != 0);
      REQUIRE(((h & 0x8000u) != 0) == std::signbit(x));
      continue;
    }
    REQUIRE(h == reference_bf16(x));
    subnormals += (h & 0x7f80u) == 0 && (h & 0x7fu) != 0;
  }
  CHECK(nans > 0);
  CHECK(subnormals > 0);
  const float max = std::numeric_limits<float>::max();
  CHECK(float_to_bf16(max) == 0x7f80);  // above the largest bf16 by more than half an ulp: inf
  CHECK(float_to_bf16(-max) == 0xff80);
  CHECK(float_to_bf16(float_of(0x3f808000u)) == 0x3f80);  // tie, even side below
  CHECK(float_to_bf16(float_of(0x3f818000u)) == 0x3f82);  // tie, even side above
  CHECK(float_to_bf16(float_of(0x7f800001u)) == 0x7fc0);  // a NaN whose payload is all dropped
}

// ---- bulk converters

TEST_CASE("bulk f16 conversion equals the scalar one on every input", "[tensor][half]") {
  const std::uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  // 1003: the vector loop and the scalar tail both run.
  rng::Stream s(seed);
  std::vector<float> src(1003);
  for (float& x : src) x = float_of(static_cast<std::uint32_t>(s.next_bits()));
  const auto normals = random_normal_floats(1003, seed + 1);
  src.insert(src.end(), normals.begin(), normals.end());
  std::vector<std::uint16_t> bulk(src.size());
  convert(src.data(), bulk.data(), src.size(), DType::f16);
  for (std::size_t i = 0; i < src.size(); ++i) {
    INFO("f32 bits 0x" << std::hex << bits_of(src[i]));
    REQUIRE(bulk[i] == float_to_f16(src[i]));
  }

  std::vector<std::uint16_t> halves(0x10000);
  for (std::uint32_t i = 0; i <= 0xffff; ++i) halves[i] = static_cast<std::uint16_t>(i);
  std::vector<float> wide(halves.size());
  convert(halves.data(), wide.data(), halves.size(), DType::f16);
  for (std::uint32_t i = 0; i <= 0xffff; ++i) {
    INFO("f16 bits 0x" << std::hex << i);
    REQUIRE(bits_of(wide[i]) == bits_of(f16_to_float(halves[i])));
  }
}

TEST_CASE("bulk bf16 conversion equals the scalar one on finite normal inputs and NaN", "[tensor][half]") {
  const std::uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  auto src = random_normal_floats(1003, seed);
  src.push_back(float_of(0x7fc00001u));
  src.push_back(float_of(0xff800001u));
  src.push_back(std::numeric_limits<float>::infinity());
  std::vector<std::uint16_t> bulk(src.size());
  convert(src.data(), bulk.data(), src.size(), DType::bf16);
  for (std::size_t i = 0; i < src.size(); ++i) {
    INFO("f32 bits 0x" << std::hex << bits_of(src[i]));
    REQUIRE(bulk[i] == float_to_bf16(src[i]));
  }

  // f32 subnormals: AVX512-BF16 reads them as zero (core/half.hpp); the portable path rounds them.
  std::vector<float> tiny(32);
  for (std::size_t i = 0; i < tiny.size(); ++i) tiny[i] = float_of(0x00400000u + static_cast<std::uint32_t>(i) * 0x1234u);
  std::vector<std::uint16_t> tiny_bulk(tiny.size());
  convert(tiny.data(), tiny_bulk.data(), tiny.size(), DType::bf16);
  for (std::size_t i = 0; i < tiny.size(); ++i) {
#if defined(__AVX512BF16__)
    CHECK(tiny_bulk[i] == 0);
#else
    CHECK(tiny_bulk[i] == float_to_bf16(tiny[i]));
#endif
  }

  std::vector<std::uint16_t> halves(0x10000);
  for (std::uint32_t i = 0; i <= 0xffff; ++i) halves[i] = static_cast<std::uint16_t>(i);
  std::vector<float> wide(halves.size());
  convert(halves.data(), wide.data(), halves.size(), DType::bf16);
  for (std::uint32_t i = 0; i <= 0xffff; ++i) REQUIRE(bits_of(wide[i]) == bits_of(bf16_to_float(halves[i])));
}

TEST_CASE("bulk conversion refuses dtypes that are not 16-bit floats", "[tensor][half]") {
  float f = 1.0f;
  std::uint16_t h = 0;
  CHECK_THROWS_AS(convert(&f, &h, 1, DType::f32), std::logic_error);
  CHECK_THROWS_AS(convert(&h, &f, 1, DType::i8), std::logic_error);
}

// ---- Tensor

TEST_CASE("a tensor's sizes, strides and bytes follow its shape and dtype", "[tensor]") {
  const Device cpu = Device::cpu();
  const DType all[] = {DType::f32, DType::f16, DType::bf16, DType::i8, DType::i4};
  const std::size_t bytes_2x3x5[] = {120, 60, 60, 30, 15};
  for (int i = 0; i < 5; ++i) {
    INFO(to_string(all[i]));
    const Tensor t = Tensor::empty({2, 3, 5}, all[i], cpu);
    CHECK(t.shape() == std::vector<std::int64_t>{2, 3, 5});
    CHECK(t.strides() == std::vector<std::int64_t>{15, 5, 1});
    CHECK(t.numel() == 30);
    CHECK(t.bytes() == bytes_2x3x5[i]);
    CHECK(t.dtype() == all[i]);
    CHECK(t.device() == cpu);
    CHECK(t.shape_string() == "(2, 3, 5)");
  }
  const Tensor odd = Tensor::empty({3, 5}, DType::i4, cpu);
  CHECK(odd.numel() == 15);
  CHECK(odd.bytes() == 8);
  const Tensor scalar = Tensor::empty({}, DType::f32, cpu);
  CHECK(scalar.numel() == 1);
  CHECK(scalar.bytes() == 4);
  CHECK(scalar.shape_string() == "()");
  CHECK(scalar.strides().empty());
  const Tensor none = Tensor::empty({4, 0, 3}, DType::bf16, cpu);
  CHECK(none.numel() == 0);
  CHECK(none.bytes() == 0);
  CHECK(none.strides() == std::vector<std::int64_t>{0, 3, 1});
  CHECK_THROWS_MATCHES(Tensor::empty({4, -1}, DType::f32, cpu), InputError,
                       Catch::Message("tensor shape (4, -1): dimension 1 is -1; sizes are 0 or more"));
}

TEST_CASE("data<T> gives the dtype's element type and refuses the others", "[tensor]") {
  const Device cpu = Device::cpu();
  Tensor f32 = Tensor::empty({4}, DType::f32, cpu);
  Tensor f16 = Tensor::empty({4}, DType::f16, cpu);
  Tensor bf16 = Tensor::empty({4}, DType::bf16, cpu);
  Tensor i8 = Tensor::empty({4}, DType::i8, cpu);
  Tensor i4 = Tensor::empty({4}, DType::i4, cpu);
  CHECK(f32.data<float>() != nullptr);
  CHECK(f16.data<std::uint16_t>() != nullptr);
  CHECK(bf16.data<std::uint16_t>() != nullptr);
  CHECK(i8.data<std::int8_t>() != nullptr);
  CHECK(i4.data<std::uint8_t>() != nullptr);
  CHECK(static_cast<const void*>(std::as_const(f32).data<float>()) == f32.data<float>());
  CHECK_THROWS_AS(f32.data<std::uint16_t>(), std::logic_error);
  CHECK_THROWS_AS(f16.data<float>(), std::logic_error);
  CHECK_THROWS_AS(bf16.data<std::int8_t>(), std::logic_error);
  CHECK_THROWS_AS(i8.data<std::uint8_t>(), std::logic_error);
  CHECK_THROWS_AS(std::as_const(i4).data<std::int8_t>(), std::logic_error);
  CHECK_THROWS_MATCHES(i4.data<float>(), std::logic_error,
                       Catch::Message("Tensor::data: tensor (4) of i4 holds std::uint8_t elements, not float"));
}

TEST_CASE("a tensor's tracked bytes are its bytes()", "[tensor][memory]") {
  const Device cpu = Device::cpu();
  const auto before = memory::usage(cpu).current;
  memory::Scope scope(cpu);
  {
    const Tensor a = Tensor::empty({7, 9}, DType::i4, cpu);
    const Tensor b = Tensor::empty({3, 64}, DType::bf16, cpu);
    CHECK(memory::usage(cpu).current == before + a.bytes() + b.bytes());
    CHECK(scope.peak_bytes() == 32 + 384);
  }
  CHECK(memory::usage(cpu).current == before);
}

TEST_CASE("moving a tensor moves its storage and leaves the source empty", "[tensor]") {
  const Device cpu = Device::cpu();
  const auto before = memory::usage(cpu).current;
  Tensor a = Tensor::empty({8, 16}, DType::f32, cpu);
  float* p = a.data<float>();
  Tensor b(std::move(a));
  CHECK(b.data<float>() == p);
  CHECK(b.shape_string() == "(8, 16)");
  CHECK(a.data<float>() == nullptr);
  CHECK(a.numel() == 0);
  CHECK(a.bytes() == 0);
  CHECK(a.shape().empty());
  CHECK(memory::usage(cpu).current == before + 512);

  Tensor c = Tensor::empty({3}, DType::i8, cpu);
  c = std::move(b);  // c's own 3 bytes are released
  CHECK(c.data<float>() == p);
  CHECK(c.dtype() == DType::f32);
  CHECK(b.bytes() == 0);
  CHECK(memory::usage(cpu).current == before + 512);
  c = Tensor();
  CHECK(memory::usage(cpu).current == before);
}

TEST_CASE("from_host and to(cpu) copy the bytes", "[tensor]") {
  const std::uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  const Device cpu = Device::cpu();
  rng::Stream s(seed);
  std::vector<std::uint8_t> packed(13);  // 25 i4 values
  for (auto& v : packed) v = static_cast<std::uint8_t>(s.next_bits());
  const Tensor a = Tensor::from_host(std::as_bytes(std::span(packed)), {5, 5}, DType::i4, cpu);
  CHECK(std::memcmp(a.data<std::uint8_t>(), packed.data(), packed.size()) == 0);
  const Tensor b = a.to(cpu);
  CHECK(b.data<std::uint8_t>() != a.data<std::uint8_t>());
  CHECK(std::memcmp(b.data<std::uint8_t>(), packed.data(), packed.size()) == 0);
  CHECK(b.shape() == a.shape());
  CHECK(b.dtype() == DType::i4);
  CHECK_THROWS_AS(Tensor::from_host(std::as_bytes(std::span(packed)), {5, 6}, DType::i4, cpu), std::invalid_argument);
  if (!cuda::unavailable_reason().empty()) {
    CHECK_THROWS_AS(a.to(Device::cuda()), DeviceUnavailable);
  }
}

TEST_CASE("fill_uniform draws rng::uniform per element, rounded to the dtype", "[tensor]") {
  const std::uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  const Device cpu = Device::cpu();
  Tensor f32 = Tensor::empty({33, 7}, DType::f32, cpu);
  Tensor f16 = Tensor::empty({33, 7}, DType::f16, cpu);
  Tensor bf16 = Tensor::empty({33, 7}, DType::bf16, cpu);
  f32.fill_uniform(seed, -2.0f, 3.0f);
  f16.fill_uniform(seed, -2.0f, 3.0f);
  bf16.fill_uniform(seed, -2.0f, 3.0f);
  const float* x = f32.data<float>();
  float lowest = 3.0f, highest = -2.0f;
  for (std::int64_t i = 0; i < f32.numel(); ++i) {
    REQUIRE(x[i] == -2.0f + 5.0f * rng::uniform(seed, static_cast<std::uint64_t>(i)));
    REQUIRE(x[i] >= -2.0f);
    REQUIRE(x[i] < 3.0f);
    REQUIRE(f16.data<std::uint16_t>()[i] == float_to_f16(x[i]));
    REQUIRE(bf16.data<std::uint16_t>()[i] == float_to_bf16(x[i]));
    lowest = std::min(lowest, x[i]);
    highest = std::max(highest, x[i]);
  }
  // 231 uniform draws over a width of 5 leave no gap near either end wider than 0.5 (a failure
  // chance of about 2 · 0.9^231, below 1e-10).
  CHECK(lowest < -1.5f);
  CHECK(highest > 2.5f);
  Tensor i8 = Tensor::empty({4}, DType::i8, cpu);
  CHECK_THROWS_AS(i8.fill_uniform(seed, 0.0f, 1.0f), std::logic_error);
}

TEST_CASE("a tensor copied to the GPU and back is unchanged", "[tensor][gpu]") {
  const std::uint64_t seed = fresh_seed();
  INFO("seed " << seed);
  const Device gpu = Device::cuda(0);
  Tensor host = Tensor::empty({3, 17, 5}, DType::bf16, Device::cpu());
  host.fill_uniform(seed, -1.0f, 1.0f);
  const auto before = memory::usage(gpu).current;
  const Tensor on_gpu = host.to(gpu);
  CHECK(on_gpu.device() == gpu);
  CHECK(on_gpu.shape() == host.shape());
  CHECK(memory::usage(gpu).current == before + host.bytes());
  const Tensor copy = on_gpu.to(gpu);  // device to device
  const Tensor back = copy.to(Device::cpu());
  CHECK(std::memcmp(back.data<std::uint16_t>(), host.data<std::uint16_t>(), host.bytes()) == 0);

  std::vector<float> values(101);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = rng::uniform(seed + 1, i);
  const Tensor direct = Tensor::from_host(std::as_bytes(std::span(values)), {101}, DType::f32, gpu);
  const Tensor direct_back = direct.to(Device::cpu());
  CHECK(std::memcmp(direct_back.data<float>(), values.data(), values.size() * sizeof(float)) == 0);
}

#ifdef AIOPT_HAVE_CUDA
TEST_CASE("a copy named with a non-blocking stream waits for that stream's work", "[tensor][gpu]") {
  // A cudaStreamNonBlocking stream does not wait for the legacy stream, nor it for it: a plain
  // cudaMemcpy after work queued there may read the bytes before the work writes them. 256 MiB
  // of memset keeps the stream busy long enough for such a copy to show.
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const Device gpu = Device::cuda(0);
  Tensor t = Tensor::zeros({std::int64_t{1} << 26}, DType::f32, gpu);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemsetAsync(t.data<float>(), 0x3f, t.bytes(), stream));
  const Tensor host = t.to(Device::cpu(), stream);
  const auto* bytes = host.data<std::uint8_t>();
  CHECK(std::all_of(bytes, bytes + host.bytes(), [](std::uint8_t b) { return b == 0x3f; }));
  // Zeroing on the stream, then reading back on it.
  t.set_zero(stream);
  const Tensor zeroed = t.to(Device::cpu(), stream);
  const auto* z = zeroed.data<std::uint8_t>();
  CHECK(std::all_of(z, z + zeroed.bytes(), [](std::uint8_t b) { return b == 0; }));
  CUDA_CHECK(cudaStreamDestroy(stream));
}
#endif
