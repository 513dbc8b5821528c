#!/usr/bin/env bash
# Formats the repository's C++ files with .clang-format. Works from any directory.
#
#   bash cmake/format.sh          rewrite the files in place
#   bash cmake/format.sh --check  change nothing; list every file that is not formatted
#                                 and exit 1 if there is one (the ctest test `format`)
#
# The files: every tracked *.hpp, *.cpp and *.h (all of them are hand-written). The
# formatter is clang-format 19 (Debian: clang-format-19): other versions format
# differently. Without it the script exits 77, which ctest reports as skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WANT=19

mode=fix
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: bash cmake/format.sh [--check]" >&2; exit 2 ;;
esac

formatter=""
for candidate in "clang-format-$WANT" clang-format; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     [[ "$("$candidate" --version)" =~ version\ $WANT\. ]]; then
    formatter="$candidate"
    break
  fi
done
if [[ -z "$formatter" ]]; then
  echo "format.sh: clang-format $WANT not found (Debian: apt-get install clang-format-$WANT); not checked" >&2
  exit 77
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -- '*.hpp' '*.cpp' '*.h')
else  # a source tree without git: the same folders
  mapfile -t files < <(find include tests bench examples cmake -type f \( -name '*.hpp' -o -name '*.cpp' -o -name '*.h' \) | sort)
fi
existing=()
for f in "${files[@]}"; do [[ -f "$f" ]] && existing+=("$f"); done  # not a deleted one
files=("${existing[@]}")

if [[ "$mode" == fix ]]; then
  "$formatter" -i -- "${files[@]}"
  echo "format.sh: formatted ${#files[@]} files"
  exit 0
fi

# One run over all the files: it warns "<file>:<line>:<col>: error: code should be
# clang-formatted" for each place that is not.
if report="$("$formatter" --dry-run --Werror -- "${files[@]}" 2>&1)"; then
  echo "format.sh: ${#files[@]} files formatted"
  exit 0
fi
bad="$(grep -oE '^[^:]+:[0-9]+:[0-9]+: error' <<<"$report" | cut -d: -f1 | sort -u || true)"
if [[ -z "$bad" ]]; then  # it failed for another reason: show it
  echo "$report"
else
  sed 's/^/not formatted: /' <<<"$bad"
fi
echo "format.sh: run bash cmake/format.sh to format the files"
exit 1
