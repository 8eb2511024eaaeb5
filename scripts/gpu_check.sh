#!/usr/bin/env bash
# The GPU check, in two steps, for a GPU machine that cannot install packages:
#
#   scripts/gpu_check.sh --prepare   (here) build a CUDA bundle, gpu-bundle/bundle.tar.gz: the aiopt binary,
#                                    the test executables, and the shared libraries they need that
#                                    a bare CUDA machine lacks (yaml-cpp, spdlog, fmt, OpenBLAS, ...)
#   scripts/gpu_check.sh             (on the GPU machine, with gpu-bundle/ carried there) run the
#                                    GPU tests and every CUDA benchmark; results go under $OUT
#                                    (default ./gpu-out): logs, JSON and Markdown reports
#
# The bundle is built for sm_90 (Hopper) unless GPU_ARCHS is set (e.g. GPU_ARCHS="80;90"), and
# without -march=native, since the GPU machine's CPU is not this one.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle=gpu-bundle

if [ "${1:-}" = "--prepare" ]; then
  set -e
  ./scripts/setup.sh -- -DAIOPT_CUDA=OFF >/dev/null  # installs the packages; the CPU build is reused by tests
  export PATH="/usr/local/cuda/bin:$PATH"
  cmake -S . -B build-gpu -DAIOPT_CUDA=ON -DAIOPT_NATIVE=OFF -DAIOPT_TESTS=ON \
        -DCMAKE_CUDA_ARCHITECTURES="${GPU_ARCHS:-90}"
  cmake --build build-gpu -j "$(nproc)"
  stage=build-gpu/bundle
  rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/lib"
  # aiopt and the test executables that hold GPU test cases, stripped: the bundle must travel
  # within the GPU machine's 64 MiB limit.
  cp build-gpu/aiopt "$stage/bin/"
  for t in build-gpu/tests/test_*; do
    # (Catch2 exits with the number of tags it listed, so that status is not a failure.)
    [ -x "$t" ] && [ -f "$t" ] && { "$t" --list-tags || true; } | grep -q '\[gpu\]' && cp "$t" "$stage/bin/"
  done
  strip --strip-unneeded "$stage"/bin/*
  # The shared libraries a bare CUDA machine lacks: all the binaries load but glibc, the C++ and
  # GCC runtimes (the GPU machine's own are newer) and CUDA's libraries.
  for exe in "$stage"/bin/*; do ldd "$exe"; done | awk '/=> \//{print $3}' | sort -u |
    grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt)[.-]' |
    while read -r lib; do cp -L "$lib" "$stage/lib/"; done
  cp -r configs schemas "$stage/"
  mkdir -p "$stage/scripts" && cp scripts/sdpa_reference.py "$stage/scripts/"
  # Compressed with gzip, which every machine has (68 MB -> 23 MB), so that it travels well
  # within 64 MiB.
  rm -rf "$bundle" && mkdir -p "$bundle"
  tar -czf "$bundle/bundle.tar.gz" -C "$stage" .
  du -sh "$stage" "$bundle"
  exit 0
fi

out="${OUT:-./gpu-out}"
mkdir -p "$out"
[ -f "$bundle/bundle.tar.gz" ] || { echo "gpu_check.sh: no $bundle/bundle.tar.gz; run 'scripts/gpu_check.sh --prepare' first and carry $bundle"; exit 2; }
unpacked="$(mktemp -d)"
tar -xzf "$bundle/bundle.tar.gz" -C "$unpacked"
export LD_LIBRARY_PATH="$unpacked/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
bin="$unpacked/bin"

status=0
step() {  # step NAME COMMAND...: run, log to $out/NAME.log, remember failures
  local name=$1; shift
  echo "== $name: $*"
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  echo "== $name: exit $rc"
  [ $rc -eq 0 ] || status=1
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv >"$out/nvidia-smi.txt" 2>&1
cat "$out/nvidia-smi.txt"
"$bin/aiopt" info --format json >"$out/info.json" 2>"$out/info.log" || status=1

# GPU tests: every test executable's [gpu] cases. AIOPT_REQUIRE_GPU=1 makes a runner that sees
# no usable device fail rather than skip (exit 77), so that this check cannot pass by running
# nothing; each log's first line names the CUDA runtime and driver versions.
export AIOPT_REQUIRE_GPU=1
for t in "$bin"/test_*; do
  step "$(basename "$t")-gpu" "$t" "[gpu]"
done

# CUDA benchmarks, one report per technique.
step tensor_fusion "$bin/aiopt" bench --technique tensor_fusion --device cuda --progress never \
  --set chain=bias_gelu,layernorm,softmax --set rows=8192,65536 --set hidden=1024 --set dtype=f32,bf16 \
  -o "$out/tensor_fusion.json" -o "$out/tensor_fusion.md"

step flash_attention "$bin/aiopt" bench --technique flash_attention --device cuda --progress never \
  --set batch=1 --set heads=64 --set seq_len=4096 --set head_dim=128 --set causal=false,true \
  --set dtype=f16,bf16,f32 -o "$out/flash_attention.json" -o "$out/flash_attention.md"
# PyTorch's scaled_dot_product_attention at the headline shape, where the machine has torch;
# exit 3 (recorded in the log) when it has not.
python3 "$unpacked/scripts/sdpa_reference.py" --batch 1 --heads 64 --seq-len 4096 --head-dim 128 --dtype f16 \
  >"$out/sdpa_reference.json" 2>&1
echo "== sdpa_reference: exit $? $(cat "$out/sdpa_reference.json")"
step linear_attention "$bin/aiopt" bench --technique linear_attention --device cuda --progress never \
  --set seq_len=4096,16384 --set causal=false,true -o "$out/linear_attention.json" -o "$out/linear_attention.md"
step kv_caching "$bin/aiopt" bench --technique kv_caching --device cuda --progress never \
  --set preset=small --set prompt_len=384 --set gen_tokens=128 -o "$out/kv_caching.json" -o "$out/kv_caching.md"
# quantization on the H200: int8 and fp8 GEMM throughput beside fp16 at 8192³, and the int4
# decode GEMV (4096 -> 14336) whose GB/s is read against the copy bandwidth in info.json.
step quantization_gemm "$bin/aiopt" bench --technique quantization --device cuda --progress never \
  --set m=8192 --set n=8192 --set k=8192 -o "$out/quantization_gemm.json" -o "$out/quantization_gemm.md"
step quantization_gemv "$bin/aiopt" bench --technique quantization --device cuda --progress never \
  -o "$out/quantization_gemv.json" -o "$out/quantization_gemv.md"
# lora on small: full fine-tuning against adapters on the qv projections at r = 8 (qlora runs
# on the CPU only).
step lora "$bin/aiopt" bench --technique lora --device cuda --progress never --variant full_finetune,lora \
  -o "$out/lora.json" -o "$out/lora.md"
# speculative decoding on small (cached by the lora step) with the tiny draft: the acceptance rule,
# greedy and prompt lookup at four values of gamma; on a GPU a (γ+1)-token verify pass should cost
# about one step, the formula's assumption the CPU breaks.
step speculative_decoding "$bin/aiopt" bench --technique speculative_decoding --device cuda --progress never \
  --variant speculative,speculative_greedy,prompt_lookup --set gamma=1,2,4,8 \
  -o "$out/speculative_decoding.json" -o "$out/speculative_decoding.md"
# dynamic batching on small: the four policies at 16 and 64 requests/s on CUDA's step costs, whose
# fitted cost_ coefficients are what a virtual run on this CPU takes to answer "on that GPU".
step dynamic_batching "$bin/aiopt" bench --technique dynamic_batching --device cuda --progress never \
  --set rate=16,64 --min-samples 1 --warmup 0 -o "$out/dynamic_batching.json" -o "$out/dynamic_batching.md"
step generate "$bin/aiopt" generate --device cuda --preset small --tokens 64 --prompt-tokens 1,2,3,4
# Training on the GPU: the CUDA backward, optimizer and trainer end to end (loss must fall as on
# the CPU).
step train "$bin/aiopt" train --device cuda --preset small --steps 300 --log-every 50
# Every technique's CI cases, on the CPU and (with a GPU present, the sweep's default) on CUDA:
# a technique added to configs/ci.yaml is checked on the GPU with no line here.
step ci_sweep "$bin/aiopt" sweep "$unpacked/configs/ci.yaml" --progress never \
  -o "$out/ci_sweep.json" -o "$out/ci_sweep.md"

echo "gpu_check.sh: done, status $status; results in $out"
exit $status
