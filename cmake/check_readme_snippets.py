#!/usr/bin/env python3
"""Checks that every C++ snippet in README.md is real, compiled code.

A snippet is a ```cpp block preceded by a line `<!-- snippet: <file> -->`, where
<file> is a source file in the repository that the build compiles (an example
program). The snippet must appear in that file between the lines
`// [snippet]` and `// [/snippet]`, exactly (indentation ignored). A ```cpp block
without a marker fails the check: every snippet must come from compiled code.
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
readme = (root / "README.md").read_text().splitlines()


def normalise(lines):
    return [line.strip() for line in lines if line.strip()]


def marked_regions(path):
    regions, current = [], None
    for line in path.read_text().splitlines():
        if line.strip() == "// [snippet]":
            current = []
        elif line.strip() == "// [/snippet]":
            regions.append(normalise(current))
            current = None
        elif current is not None:
            current.append(line)
    return regions


errors, checked, i = [], 0, 0
while i < len(readme):
    if readme[i].strip() == "```cpp":
        marker = readme[i - 1].strip() if i > 0 else ""
        m = re.fullmatch(r"<!-- snippet: (\S+) -->", marker)
        end = next(j for j in range(i + 1, len(readme)) if readme[j].strip() == "```")
        block = normalise(readme[i + 1:end])
        if not m:
            errors.append(f"README.md:{i + 1}: cpp block without a '<!-- snippet: file -->' line above it")
        else:
            source = root / m.group(1)
            if not source.exists():
                errors.append(f"README.md:{i + 1}: {m.group(1)} does not exist")
            elif block not in marked_regions(source):
                errors.append(f"README.md:{i + 1}: block differs from every // [snippet] region of {m.group(1)}")
            checked += 1
        i = end
    i += 1

for e in errors:
    print(e)
print(f"{checked} README snippets checked, {len(errors)} problems")
sys.exit(1 if errors else 0)
