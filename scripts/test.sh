#!/usr/bin/env bash
# Builds (via setup.sh, which installs what is missing) and runs every test with ctest.
#   scripts/test.sh              the Release build in build/
#   scripts/test.sh --sanitize   under AddressSanitizer and UndefinedBehaviorSanitizer (build-sanitize/)
# GPU tests are reported as skipped, with the reason, when no CUDA device is present.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=build
setup_args=()
case "${1:-}" in
  "") ;;
  --sanitize) build_dir=build-sanitize; setup_args+=(--sanitize) ;;
  -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
  *) echo "test.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
esac

./scripts/setup.sh "${setup_args[@]}"
# What only tests use: Chromium renders the HTML report; Google Benchmark's compare.py (with
# scipy) reads the gbench export; Slurm and munge run scripts/slurm_sweep.sh.
./scripts/install_packages.sh chromium libbenchmark-tools python3-scipy slurm-wlm munge
if [ "$build_dir" = build-sanitize ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi
status=0
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" || status=$?
# ctest prints no output of skipped tests; their reasons are in its log.
grep -h "^SKIP:" "$build_dir"/Testing/Temporary/LastTest*.log 2>/dev/null | sort | uniq -c || true
exit $status
