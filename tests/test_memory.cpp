// The tracked allocator: exact current/peak bytes per device, and nested scopes.
#include <catch2/catch.hpp>

#include "core/memory.hpp"

#ifdef AIOPT_HAVE_CUDA
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
