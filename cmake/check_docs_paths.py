#!/usr/bin/env python3
"""Checks that every repository path named in the maintainer documents exists.

A path is a word that starts with include/, tests/, bench/, examples/, cmake/ or
detail/ (the last is under include/mproc/) and ends with a file extension or a slash,
e.g. `detail/engine/dispatch_engine.hpp`, `tests/compile_fail/` or `bench/bench_*.cpp` (a
pattern must match at least one file). A word that continues a longer path
(build/tests/test_pool) is not one. So a document that names a file which was moved
or removed fails the check instead of misleading its next reader.
"""
import pathlib
import re
import sys

DOCUMENTS = ["ARCHITECTURE.md", "CONTRIBUTING.md"]
PATH = re.compile(r"(?<![\w./<>-])((?:include|tests|bench|examples|cmake|detail)/[\w.*/-]*)")
EXTENSION = re.compile(r"\.[A-Za-z0-9]+$")

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")


def named_paths(text):
    for number, line in enumerate(text.splitlines(), 1):
        for m in PATH.finditer(line):
            path = m.group(1).rstrip(".,")
            if path.endswith("/") or EXTENSION.search(path.rsplit("/", 1)[-1]):
                yield number, path


def exists(path):
    if path.startswith("detail/"):
        path = "include/mproc/" + path
    if "*" in path:
        return any(root.glob(path.rstrip("/")))
    return (root / path).exists()


errors, checked = [], 0
for name in DOCUMENTS:
    document = root / name
    if not document.exists():
        errors.append(f"{name}: missing")
        continue
    for number, path in named_paths(document.read_text()):
        checked += 1
        if not exists(path):
            errors.append(f"{name}:{number}: {path} does not exist")

for e in errors:
    print(e)
print(f"{checked} paths in {', '.join(DOCUMENTS)} checked, {len(errors)} problems")
sys.exit(1 if errors else 0)
