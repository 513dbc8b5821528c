#!/usr/bin/env bash
# The project's single entry point. Works from any directory.
#
#   bash cmake/mproc.sh demo [args...]  install deps, configure, build and run
#                                       the flagship demo (examples/flagship_demo)
#   bash cmake/mproc.sh test            install deps, configure, build everything
#                                       and run the whole test suite; then the same
#                                       suite built with AddressSanitizer and
#                                       UndefinedBehaviorSanitizer; then the decoders
#                                       under libFuzzer for 60 s
#   bash cmake/mproc.sh bench [--quick] install deps, configure, build the benchmarks
#                                       and print mproc vs Python's multiprocessing
#                                       and the machine's limits (bench/compare.py)
#   bash cmake/mproc.sh deps            only install the Debian packages
#
# Environment: MPROC_BUILD_DIR  build directory (default: build, relative
#                               paths are relative to the repository root)
#              MPROC_SANITIZE_BUILD_DIR  the sanitizer build of `test`
#                               (default: the build directory + "-sanitize")
#              MPROC_TEST_JOBS  tests ctest runs at once (default: twice the cores)
set -euo pipefail

# Debian packages needed to build and test mproc. libboost-dev is for the benchmarks
# and tests only (bench/bench_boost.cpp, tests/test_boost_kill_safety.cpp measure mproc
# against Boost.Interprocess); the library itself does not use Boost.
DEPS=(build-essential cmake g++ clang libclang-rt-14-dev libcereal-dev catch2
      libbenchmark-dev python3 pkg-config libopenmpi-dev openmpi-bin libboost-dev
      clang-format-19)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${MPROC_BUILD_DIR:-build}"
SANITIZE_BUILD_DIR="${MPROC_SANITIZE_BUILD_DIR:-$BUILD_DIR-sanitize}"
JOBS="$(nproc 2>/dev/null || echo 2)"
# Most tests spend their time waiting on their processes (pipes, gates, exits), not
# computing: two per core keep the cores busy (on 2 cores, 10% to 25% less wall time
# than one per core; more on a busy machine). Tests wait on events, never on timers, so
# the extra load is safe.
TEST_JOBS="${MPROC_TEST_JOBS:-$((JOBS * 2))}"

usage() {
  echo "usage: bash cmake/mproc.sh {demo [args...]|test|bench [--quick]|deps}" >&2
  exit 2
}

# Install whichever of DEPS are missing; does nothing (and needs no network
# or root) when they are all present.
install_deps() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "mproc.sh: not a Debian-based system; make sure these are installed: ${DEPS[*]}" >&2
    return 0
  fi
  local pkg status missing=()
  for pkg in "${DEPS[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
  done
  ((${#missing[@]} > 0)) || return 0

  local sudo=()
  if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "mproc.sh: need root (or sudo) to install: ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "mproc.sh: installing ${missing[*]}"
  "${sudo[@]}" apt-get update
  # `env` rather than a VAR=... prefix, because sudo resets the environment.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
}

# RelWithDebInfo with line tables only (-g1): backtraces, gdb and perf still name
# files and lines, and the build takes about 40% less time than with full -g.
configure() {
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
}

# Builds everything in build directory $1 and runs its whole suite.
build_and_test() {
  cmake --build "$1" -j "$JOBS"
  # --no-tests=error: an empty suite is a broken build, not a success.
  ctest --test-dir "$1" --output-on-failure --no-tests=error -j "$TEST_JOBS"
}

cmd="${1:-}"
(($# > 0)) && shift
case "$cmd" in
  deps)
    install_deps
    ;;
  demo)
    install_deps
    configure
    cmake --build "$BUILD_DIR" --target flagship_demo -j "$JOBS"
    exec "$BUILD_DIR/examples/flagship_demo" "$@"
    ;;
  test)
    (($# == 0)) || usage
    install_deps
    configure
    build_and_test "$BUILD_DIR"  # first, so that a plain failure shows early
    # The same suite with AddressSanitizer and UndefinedBehaviorSanitizer (default
    # ASAN_OPTIONS/UBSAN_OPTIONS are compiled in: cmake/sanitizer_options.cpp), at
    # -Og -g1: line numbers in the reports; instrumented -O1 compiles 1.6x slower and
    # -O0 makes the big-payload tests run 5x longer. The benchmarks' smoke runs, the
    # example programs, and the tests of the build itself (compile-fail, consumer
    # projects, README snippets), are left to the first build: they run no library
    # code the tests do not, and the examples alone would add 25 instrumented builds.
    cmake -S . -B "$SANITIZE_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-Og -g1" \
      -DMPROC_SANITIZE=address,undefined -DMPROC_BUILD_BENCH=OFF -DMPROC_BUILD_EXAMPLES=OFF
    build_and_test "$SANITIZE_BUILD_DIR"
    # The frame and codec decoders under libFuzzer for 60 s (the main suite's short
    # run built the target already).
    cmake -DBINARY_DIR="$BUILD_DIR/tests/fuzz" -DCXX="$(command -v clang++)" -DSECONDS=60 -DJOBS="$JOBS" \
      -P tests/fuzz/run_fuzz.cmake
    ;;
  bench)
    install_deps
    configure
    exec python3 bench/compare.py --build-dir "$BUILD_DIR" "$@"
    ;;
  *)
    usage
    ;;
esac
