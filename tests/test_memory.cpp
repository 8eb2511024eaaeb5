// The tracked allocator: exact current/peak bytes per device, and nested scopes; and the block
// cache under it for CUDA devices (core/block_cache.hpp), tested here on host memory standing in
// for a device, with streams whose queued work only a fence completes, and under the ledger
// through memory::serve_from. The CUDA wiring itself runs under [gpu].
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <set>
#include <vector>

#include "core/block_cache.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "core/cuda_check.hpp"
#include "core/cuda_error.hpp"
#endif

using namespace aiopt;

TEST_CASE("a scope sees the peak of what was allocated inside it", "[memory]") {
  const Device cpu = Device::cpu();
  const auto before = memory::usage(cpu).current;
  memory::Scope scope(cpu);
  {
    memory::Buffer<float> a(cpu, 1000);
    memory::Buffer<float> b(cpu, 500);
    CHECK(memory::usage(cpu).current == before + 6000);
  }
  memory::Buffer<double> c(cpu, 100);
  CHECK(scope.peak_bytes() == 6000);
  CHECK(memory::usage(cpu).current == before + 800);
}

TEST_CASE("nested scopes keep their own peaks", "[memory]") {
  const Device cpu = Device::cpu();
  memory::Scope outer(cpu);
  memory::Buffer<char> a(cpu, 4096);
  {
    memory::Scope inner(cpu);
    memory::Buffer<char> b(cpu, 1 << 20);
    b.reset();
    memory::Buffer<char> c(cpu, 1000);
    CHECK(inner.peak_bytes() == (1u << 20));
    CHECK(outer.peak_bytes() == 4096 + (1u << 20));
  }
  // After the inner scope closes the outer one still remembers the peak inside it.
  CHECK(outer.peak_bytes() == 4096 + (1u << 20));
  memory::Scope later(cpu);
  memory::Buffer<char> d(cpu, 10);
  CHECK(later.peak_bytes() == 10);
}

TEST_CASE("moving a buffer moves its ownership, not its bytes", "[memory]") {
  const Device cpu = Device::cpu();
  const auto before = memory::usage(cpu).current;
  memory::Buffer<int> a(cpu, 256);
  int* p = a.data();
  memory::Buffer<int> b(std::move(a));
  CHECK(b.data() == p);
  CHECK(a.data() == nullptr);
  CHECK(memory::usage(cpu).current == before + 1024);
  b = memory::Buffer<int>();
  CHECK(memory::usage(cpu).current == before);
}

TEST_CASE("host buffers are aligned for full-width vector loads", "[memory]") {
  const Device cpu = Device::cpu();
  for (std::size_t n : {1u, 3u, 17u, 1000u}) {
    memory::Buffer<float> b(cpu, n);
    CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % memory::host_alignment == 0);
  }
}

TEST_CASE("scopes and usage are per device", "[memory]") {
  const Device cpu = Device::cpu(), gpu = Device::cuda(0);
  const auto gpu_before = memory::usage(gpu);
  memory::Scope gpu_scope(gpu);
  memory::Scope cpu_scope(cpu);
  memory::Buffer<float> a(cpu, 256);
  CHECK(cpu_scope.peak_bytes() == 1024);
  CHECK(gpu_scope.peak_bytes() == 0);
  CHECK(memory::usage(gpu).current == gpu_before.current);
  CHECK(memory::usage(gpu).peak == gpu_before.peak);
}

#ifdef AIOPT_HAVE_CUDA
// Built wherever CUDA is, GPU or not: the mapping is a pure function of the error code.
TEST_CASE("only an absent device skips and any other CUDA error fails", "[memory]") {
  using cuda::ErrorClass;
  CHECK(cuda::classify(cudaErrorMemoryAllocation) == ErrorClass::out_of_memory);
  for (cudaError_t absent : {cudaErrorNoDevice, cudaErrorInsufficientDriver, cudaErrorInvalidDevice})
    CHECK(cuda::classify(absent) == ErrorClass::device_unavailable);
  // Sticky errors a faulting kernel leaves for every later call, and other failures.
  for (cudaError_t fault : {cudaErrorIllegalAddress, cudaErrorLaunchFailure, cudaErrorMisalignedAddress,
                            cudaErrorIllegalInstruction, cudaErrorAssert, cudaErrorLaunchTimeout,
                            cudaErrorInvalidValue, cudaErrorUnknown})
    CHECK(cuda::classify(fault) == ErrorClass::failure);
}
#endif

// ---- the block cache, on host memory standing in for a device

namespace {

// A device made of host memory: `capacity` bytes, streams whose queued work (each an op that
// uses some blocks) finishes only at a fence or a free (which waits for the device, as cudaFree
// does), and a count of what the cache asked of it.
class FakeDevice final : public memory::BlockSource {
 public:
  explicit FakeDevice(std::size_t capacity, int streams = 3) : capacity_(capacity), queued_(streams) {}
  ~FakeDevice() override {
    for (const auto& [block, size] : blocks_) std::free(block);
  }

  void* allocate(std::size_t bytes) override {
    if (held_ + bytes > capacity_) {
      ++refusals;
      return nullptr;
    }
    void* block = std::malloc(bytes);
    blocks_[block] = bytes;
    held_ += bytes;
    ++allocations;
    return block;
  }
  void free(void* block) noexcept override {
    for (auto& stream : queued_) stream.clear();
    held_ -= blocks_.at(block);
    blocks_.erase(block);
    std::free(block);
    ++frees;
  }
  void fence() override {
    for (auto& stream : queued_) stream.clear();
    ++fences;
  }

  // Work on `stream` that uses `block` and has not run yet.
  void enqueue(int stream, void* block) { queued_[static_cast<std::size_t>(stream)].push_back(block); }
  bool queued_work_uses(void* block) const {
    return std::any_of(queued_.begin(), queued_.end(), [block](const std::vector<void*>& stream) {
      return std::find(stream.begin(), stream.end(), block) != stream.end();
    });
  }
  std::size_t block_size(void* block) const { return blocks_.at(block); }
  std::size_t held() const { return held_; }

  std::size_t allocations = 0, frees = 0, fences = 0, refusals = 0;

 private:
  std::size_t capacity_;
  std::size_t held_ = 0;
  std::map<void*, std::size_t> blocks_;
  std::vector<std::vector<void*>> queued_;
};

constexpr std::size_t kib = 1024, mib = 1024 * 1024;

}  // namespace

TEST_CASE("the block cache rounds to 512 bytes and makes blocks at four classes per power of two",
          "[memory][block_cache]") {
  using memory::BlockCache;
  CHECK(BlockCache::rounded_size(1) == 512);
  CHECK(BlockCache::rounded_size(512) == 512);
  CHECK(BlockCache::rounded_size(513) == 1024);
  CHECK(BlockCache::class_size(1) == 512);
  CHECK(BlockCache::class_size(1536) == 1536);   // below 2 KiB every multiple of 512 is a class
  CHECK(BlockCache::class_size(2049) == 2560);   // 2 KiB + a granule: 1.25 · 2 KiB
  CHECK(BlockCache::class_size(4097) == 5120);   // 1.25 · 4 KiB
  CHECK(BlockCache::class_size(mib) == mib);     // a power of two is its own class
  CHECK(BlockCache::class_size(mib + 1) == mib + mib / 4);
  CHECK(BlockCache::class_size(3 * mib + 1) == 3 * mib + mib / 2);  // 1.75 · 2 MiB
  CHECK_THROWS_AS(BlockCache::class_size(~std::size_t{0}), std::bad_alloc);
  // On fresh random sizes: at least the rounded size, a multiple of the granule, and under a
  // quarter more than the rounded size (the class step is a quarter of the power of two at or
  // below it, so at most a quarter of the size itself, less one granule).
  rng::Stream s(5);
  for (int i = 0; i < 20000; ++i) {
    const std::size_t bytes = 1 + s.next_bits() % (std::size_t{1} << (1 + s.next_bits() % 40));
    const std::size_t rounded = BlockCache::rounded_size(bytes), size = BlockCache::class_size(bytes);
    INFO("bytes=" << bytes);
    REQUIRE(rounded >= bytes);
    REQUIRE(rounded - bytes < BlockCache::granule);
    REQUIRE(size >= rounded);
    REQUIRE(size % BlockCache::granule == 0);
    REQUIRE(4 * (size - rounded) < rounded);
  }
  // Each power of two's sizes fall into at most four classes.
  for (std::size_t octave = 4 * kib; octave <= 64 * mib; octave *= 2) {
    std::set<std::size_t> classes;
    for (std::size_t bytes = octave + 1; bytes <= 2 * octave; bytes += octave / 64) classes.insert(BlockCache::class_size(bytes));
    classes.insert(BlockCache::class_size(2 * octave));
    CHECK(classes.size() <= 4);
  }
}

TEST_CASE("a released block is reused only after a fence", "[memory][block_cache]") {
  FakeDevice device(64 * mib);
  memory::BlockCache cache(device, 4 * kib);  // slack 4 KiB while little is in use
  void* a = cache.allocate(1000);
  CHECK(device.block_size(a) >= 1000);
  cache.release(a);
  // 1 KiB pending, below the slack: a new block rather than a fence.
  void* b = cache.allocate(1000);
  CHECK(b != a);
  CHECK(device.fences == 0);
  cache.release(b);
  void* c = cache.allocate(3000);
  cache.release(c);
  // 1 + 1 + 3 KiB pending reach the slack: one fence, then the smallest fitting block.
  void* d = cache.allocate(900);
  CHECK(device.fences == 1);
  CHECK((d == a || d == b));
  void* e = cache.allocate(1024);  // the other 1 KiB block, now free
  CHECK((e == a || e == b));
  CHECK(e != d);
  // 3000 rounds to 3072, whose class is 3072: the 3 KiB block, not a bigger new one.
  void* f = cache.allocate(2600);
  CHECK(f == c);
  CHECK(device.allocations == 3);
  CHECK(cache.in_use_bytes() == 1024 + 1024 + 3072);
  CHECK(cache.reserved_bytes() == device.held());
  cache.release(d);
  cache.release(e);
  cache.release(f);
  // A block is not handed out for a request far smaller than itself (past the request's class).
  void* small = cache.allocate(100);
  CHECK(small != c);
  cache.release(small);
}

TEST_CASE("a steady loop of steps runs without device allocations or frees once warm", "[memory][block_cache]") {
  // A model-like step: per layer three tensors, two freed within the layer and one at the end
  // of the step, beside 2 MiB of weights that stay. Slack 1 MiB, so that a fence falls every
  // few steps and the pool of blocks settles within the warm-up.
  FakeDevice device(1024 * mib);
  memory::BlockCache cache(device, mib);
  void* weights = cache.allocate(2 * mib);
  std::size_t allocations_warm = 0, frees_warm = 0, fences_warm = 0;
  const int warm = 50, steps = 500;
  for (int step = 0; step < steps; ++step) {
    if (step == warm) {
      allocations_warm = device.allocations;
      frees_warm = device.frees;
      fences_warm = device.fences;
    }
    std::vector<void*> held;
    for (int layer = 0; layer < 4; ++layer) {
      void* x = cache.allocate(6000);
      void* qkv = cache.allocate(18000);
      void* scores = cache.allocate(40000);
      cache.release(x);
      cache.release(scores);
      held.push_back(qkv);
    }
    for (void* b : held) cache.release(b);
  }
  INFO("device allocations " << device.allocations << " (" << allocations_warm << " warm), frees " << device.frees
                             << ", fences " << device.fences << " (" << fences_warm << " warm)");
  CHECK(device.allocations == allocations_warm);
  CHECK(device.frees == frees_warm);
  // Churn per step: 4 layers of blocks of 6144, 20480 and 40960 bytes (their classes) = 264 KiB;
  // the slack is at least the 2 MiB of weights in use, so a fence falls at most once per
  // 2048 / 264 steps: fences <= 450 · 264 / 2048 + 1.
  CHECK(device.fences - fences_warm <= (steps - warm) * 264 / 2048 + 1);
  // Held: at most in use + 2 x slack + one block when it last grew (block_cache.hpp); in use is
  // at most the weights, a step's 4 qkv blocks, x and scores, and the slack is as much.
  const std::size_t most_in_use = 2 * mib + 4 * 20480 + 6144 + 40960;
  CHECK(cache.reserved_bytes() <= 3 * most_in_use + 40960);
  cache.release(weights);
}

TEST_CASE("a block released while queued work uses it is never handed to other work first",
          "[memory][block_cache]") {
  // Random sizes on three streams (stream 0 standing for the legacy default stream, which the
  // others do not wait for): every op uses its blocks on one stream, and some blocks are written
  // on another stream too, then released at once, as a tensor freed at the end of an op is.
  FakeDevice device(256 * mib);
  memory::BlockCache cache(device, 2 * mib);
  rng::Stream s(17);
  std::vector<std::pair<void*, std::size_t>> held;
  std::size_t handed_out = 0, reused = 0;
  std::set<void*> seen;
  for (int op = 0; op < 20000; ++op) {
    const std::size_t bytes = 1 + s.next_bits() % (std::size_t{1} << (9 + s.next_bits() % 12));
    void* block = cache.allocate(bytes);
    ++handed_out;
    reused += !seen.insert(block).second;
    if (device.queued_work_uses(block)) FAIL("a block went to new work while queued work on a stream still used it");
    REQUIRE(device.block_size(block) >= bytes);
    std::memset(block, 0x5a, bytes);  // the whole request is the caller's (AddressSanitizer checks)
    const int stream = static_cast<int>(s.next_bits() % 3);
    device.enqueue(stream, block);
    if (s.next_bits() % 4 == 0) device.enqueue((stream + 1) % 3, block);
    held.emplace_back(block, bytes);
    while (held.size() > 1 + s.next_bits() % 40) {
      const std::size_t i = s.next_bits() % held.size();
      cache.release(held[i].first);
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
    }
    std::size_t in_use = 0;
    for (const auto& h : held) in_use += device.block_size(h.first);
    REQUIRE(cache.in_use_bytes() == in_use);
    REQUIRE(cache.reserved_bytes() == device.held());
  }
  INFO(reused << " of " << handed_out << " blocks were reused, " << device.fences << " fences");
  CHECK(reused > handed_out / 2);
  for (const auto& h : held) cache.release(h.first);
}

TEST_CASE("out of memory the cache gives back its unused blocks and retries once", "[memory][block_cache]") {
  SECTION("cached blocks of other sizes go back to make room") {
    FakeDevice device(10 * mib);
    memory::BlockCache cache(device, 64 * mib);  // a slack past the device: only memory pressure frees
    std::vector<void*> small;
    for (int i = 0; i < 8; ++i) small.push_back(cache.allocate(mib));
    for (void* b : small) cache.release(b);
    CHECK(device.held() == 8 * mib);
    void* big = cache.allocate(6 * mib);  // 2 MiB left: refused, then room once the 1 MiB blocks go
    CHECK(device.refusals == 1);
    CHECK(device.fences == 1);
    CHECK(device.frees == 8);
    CHECK(device.block_size(big) == 6 * mib);
    CHECK(cache.reserved_bytes() == 6 * mib);
    cache.release(big);
  }
  SECTION("a fence makes a pending block reusable before anything is given back") {
    FakeDevice device(4 * mib);
    memory::BlockCache cache(device, 64 * mib);
    void* a = cache.allocate(3 * mib);
    cache.release(a);
    void* b = cache.allocate(3 * mib);  // a new 3 MiB block does not fit: reuse a after the fence
    CHECK(b == a);
    CHECK(device.fences == 1);
    CHECK(device.frees == 0);
    cache.release(b);
  }
  SECTION("the retry asks for the rounded size, not the class") {
    // 5 MiB + 1 byte rounds to 5 MiB + 512 and has the class 6 MiB, which does not fit.
    FakeDevice device(5 * mib + 512);
    memory::BlockCache cache(device);
    void* a = cache.allocate(5 * mib + 1);
    CHECK(device.block_size(a) == 5 * mib + 512);
    CHECK(device.refusals == 1);
    cache.release(a);
  }
  SECTION("when nothing can make room it throws std::bad_alloc and holds only what is in use") {
    FakeDevice device(8 * mib);
    memory::BlockCache cache(device, 64 * mib);
    void* kept = cache.allocate(4 * mib);
    void* spare = cache.allocate(2 * mib);
    cache.release(spare);
    CHECK_THROWS_AS(cache.allocate(5 * mib), std::bad_alloc);
    CHECK(device.held() == 4 * mib);
    CHECK(cache.reserved_bytes() == 4 * mib);
    CHECK(cache.in_use_bytes() == 4 * mib);
    cache.release(kept);
  }
}

TEST_CASE("trim gives every unused block back and keeps the blocks in use", "[memory][block_cache]") {
  FakeDevice device(64 * mib);
  memory::BlockCache cache(device);
  void* kept = cache.allocate(3 * mib);
  void* pending = cache.allocate(mib);
  cache.release(pending);
  cache.trim();
  CHECK(device.held() == 3 * mib);
  CHECK(cache.reserved_bytes() == 3 * mib);
  CHECK(device.frees == 1);
  cache.release(kept);
}

TEST_CASE("under the ledger the cache leaves the tracked bytes exact and reports what it holds",
          "[memory][block_cache]") {
  // A stand-in CUDA device served by host memory: memory::allocate and release go through the
  // cache as a GPU's do, and the ledger must count the requested bytes, not the blocks.
  static FakeDevice device(512 * mib);
  const Device dev = Device::cuda(77);
  memory::serve_from(dev, device);
  CHECK_THROWS_AS(memory::serve_from(dev, device), std::logic_error);
  CHECK_THROWS_AS(memory::serve_from(Device::cpu(), device), std::logic_error);
  memory::Scope scope(dev);
  rng::Stream s(23);
  std::vector<memory::Buffer<std::byte>> held;
  std::size_t live = 0, peak = 0;
  for (int op = 0; op < 3000; ++op) {
    const std::size_t bytes = 1 + s.next_bits() % (std::size_t{1} << (4 + s.next_bits() % 18));
    held.emplace_back(dev, bytes);
    live += bytes;
    peak = std::max(peak, live);
    while (held.size() > 1 + s.next_bits() % 30) {
      const std::size_t i = s.next_bits() % held.size();
      live -= held[i].bytes();
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
    }
    REQUIRE(memory::usage(dev).current == live);
    REQUIRE(memory::usage(dev).reserved == device.held());
  }
  CHECK(scope.peak_bytes() == peak);
  CHECK(memory::usage(dev).peak == peak);
  // What the device held at its peak: at least the peak of what callers held.
  CHECK(scope.reserved_peak_bytes() >= scope.peak_bytes());
  held.clear();
  CHECK(memory::usage(dev).current == 0);
  CHECK(memory::usage(dev).reserved > 0);  // the blocks are cached, not given back
  memory::release_cached(dev);
  CHECK(memory::usage(dev).reserved == 0);
  CHECK(device.held() == 0);
  // A scope opened after the cache was emptied sees what a case allocates, rounded up.
  memory::Scope after(dev);
  memory::Buffer<float> b(dev, 1000);
  CHECK(after.peak_bytes() == 4000);
  CHECK(after.reserved_peak_bytes() == 4096);
}

TEST_CASE("on the host what is held is what is live", "[memory]") {
  const Device cpu = Device::cpu();
  memory::Scope scope(cpu);
  memory::Buffer<float> a(cpu, 300);
  CHECK(memory::usage(cpu).reserved == memory::usage(cpu).current);
  CHECK(scope.reserved_peak_bytes() == scope.peak_bytes());
  memory::release_cached(cpu);  // nothing cached on the host
  CHECK(memory::usage(cpu).reserved == memory::usage(cpu).current);
}

#ifdef AIOPT_HAVE_CUDA
TEST_CASE("cuda blocks are reused only after the work queued on them has run", "[memory][gpu]") {
  // 16 copies of 64 MiB queued on a non-blocking stream keep it busy for about a millisecond
  // (2 GiB moved at a few TB/s); the source is released at once, and the next block of its size
  // is zeroed on the legacy default stream, which does not wait for that stream. Reused before
  // the copies had run, the block would put zeros into the copy.
  const Device gpu = Device::cuda(0);
  memory::release_cached(gpu);
  const std::size_t n = std::size_t{64} << 20;
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const auto before = memory::usage(gpu);
  memory::Buffer<std::uint8_t> source(gpu, n), copy(gpu, n);
  CUDA_CHECK(cudaMemset(source.data(), 0x3f, n));
  CUDA_CHECK(cudaDeviceSynchronize());
  const void* released = source.data();
  for (int i = 0; i < 16; ++i)
    CUDA_CHECK(cudaMemcpyAsync(copy.data(), source.data(), n, cudaMemcpyDeviceToDevice, stream));
  source.reset();
  // 64 MiB pending reach the slack (64 MiB at least, and 64 MiB in use): a fence, then reuse.
  memory::Buffer<std::uint8_t> next(gpu, n);
  CHECK(next.data() == released);
  CUDA_CHECK(cudaMemset(next.data(), 0, n));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::uint8_t> host(n);
  CUDA_CHECK(cudaMemcpy(host.data(), copy.data(), n, cudaMemcpyDeviceToHost));
  CHECK(std::count(host.begin(), host.end(), std::uint8_t{0x3f}) == static_cast<std::ptrdiff_t>(n));
  CHECK(memory::usage(gpu).current == before.current + 2 * n);
  CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("cuda steps of fixed sizes hold no more device memory once warm", "[memory][gpu]") {
  const Device gpu = Device::cuda(0);
  memory::release_cached(gpu);
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const auto before = memory::usage(gpu);
  std::size_t reserved_warm = 0;
  for (int step = 0; step < 200; ++step) {
    if (step == 100) reserved_warm = memory::usage(gpu).reserved;
    for (std::size_t bytes : {std::size_t{3000}, std::size_t{1} << 20, std::size_t{5} << 20}) {
      memory::Buffer<std::uint8_t> t(gpu, bytes);
      CUDA_CHECK(cudaMemsetAsync(t.data(), step & 0xff, bytes, stream));
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CHECK(memory::usage(gpu).reserved == reserved_warm);
  CHECK(memory::usage(gpu).current == before.current);
  CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST_CASE("cuda out of memory gives the cached blocks back before it throws", "[memory][gpu]") {
  const Device gpu = Device::cuda(0);
  {
    memory::Buffer<std::uint8_t> cached(gpu, std::size_t{256} << 20);
  }
  CHECK(memory::usage(gpu).reserved >= memory::usage(gpu).current + (std::size_t{256} << 20));
  std::size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  CHECK_THROWS_AS(memory::Buffer<std::uint8_t>(gpu, 2 * total_bytes), std::bad_alloc);
  // Nothing is cached after the retry: what the device holds for aiopt is what is in use, rounded.
  const auto after = memory::usage(gpu);
  CHECK(after.reserved < after.current + (std::size_t{1} << 20));
  memory::Buffer<std::uint8_t> fits(gpu, std::size_t{1} << 20);  // the device still serves
  CHECK(fits.data() != nullptr);
}
#endif
