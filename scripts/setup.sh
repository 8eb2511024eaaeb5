#!/usr/bin/env bash
# Installs the Debian packages aiopt needs when they are missing, then configures and builds.
#   scripts/setup.sh              Release build in build/ (CUDA when nvcc is found)
#   scripts/setup.sh --sanitize   ASan + UBSan build of the CPU code in build-sanitize/
# Extra arguments after -- go to cmake, e.g. scripts/setup.sh -- -DAIOPT_CUDA=OFF
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=build
cmake_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) build_dir=build-sanitize; cmake_args+=(-DAIOPT_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
    --) shift; cmake_args+=("$@"); break ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

./scripts/install_packages.sh cmake make g++ git libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev \
  libyaml-cpp-dev catch2 libopenblas-dev libvalijson-dev libxxhash-dev libpcre2-dev pkg-config python3 python3-matplotlib

# nvcc is often installed outside PATH; CMake's AUTO detection looks on PATH.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

cmake -S . -B "$build_dir" "${cmake_args[@]}"
cmake --build "$build_dir" -j "$(nproc)"
