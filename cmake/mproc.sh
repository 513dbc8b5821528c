#!/usr/bin/env bash
# The project's single entry point. Works from any directory.
#
#   bash cmake/mproc.sh demo [args...]  install deps, configure, build and run
#                                       the flagship demo (examples/flagship_demo)
#   bash cmake/mproc.sh test            install deps, configure, build everything
#                                       and run the whole test suite
#   bash cmake/mproc.sh bench [--quick] install deps, configure, build the benchmarks
#                                       and print mproc vs Python's multiprocessing
#                                       and the machine's limits (bench/compare.py)
#   bash cmake/mproc.sh deps            only install the Debian packages
#
# Environment: MPROC_BUILD_DIR  build directory (default: build, relative
#                               paths are relative to the repository root)
set -euo pipefail

# Debian packages needed to build and test mproc.
DEPS=(build-essential cmake g++ clang libboost-dev libcereal-dev catch2
      libbenchmark-dev python3 pkg-config libopenmpi-dev openmpi-bin)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${MPROC_BUILD_DIR:-build}"
JOBS="$(nproc 2>/dev/null || echo 2)"

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

configure() {
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo
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
    cmake --build "$BUILD_DIR" -j "$JOBS"
    # --no-tests=error: an empty suite is a broken build, not a success.
    ctest --test-dir "$BUILD_DIR" --output-on-failure --no-tests=error -j "$JOBS"
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
