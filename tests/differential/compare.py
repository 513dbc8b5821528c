"""Runs one differential scenario on both sides and compares what they print.

    python3 compare.py <differential_scenarios binary> <scenario>

The C++ program (scenarios.cpp, mproc) and its Python twin (scenarios.py, Python's
multiprocessing with the fork start method, run by this interpreter) each print one
line per observable event. The lines must be equal, but for the differences mproc
makes on purpose, listed in DELIBERATE below with where the README documents them:
those are rewritten from Python's line to mproc's, and said so, never silently.
Exit status 0 when they match, 1 when they differ, 2 on a usage error.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# How long either side may take before it counts as hung.
TIMEOUT_S = 120

# scenario -> [(Python's line, mproc's line, why)]
DELIBERATE = {
    "pool_map_error": [
        ("map, the later item fails first: raised item 9",
         "map, the later item fails first: raised item 3",
         "mproc's map raises the first failure in input order (README, Failure semantics, "
         "'F throws'); Python's MapResult keeps the first failure to arrive"),
    ],
}


def run(argv):
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT_S, text=True)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return out.splitlines() + [f"<hung: no end within {TIMEOUT_S} s>"], ""
    lines = done.stdout.splitlines()
    if done.returncode != 0:
        lines.append(f"<exit status {done.returncode}>")
    return lines, done.stderr


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, scenario = sys.argv[1], sys.argv[2]
    mproc_lines, mproc_err = run([binary, scenario])
    python_lines, python_err = run([sys.executable, os.path.join(HERE, "scenarios.py"), scenario])
    expected = list(python_lines)
    for python_line, mproc_line, why in DELIBERATE.get(scenario, []):
        if python_line in expected:
            expected[expected.index(python_line)] = mproc_line
            print(f"deliberate difference: Python printed {python_line!r}, mproc is to print {mproc_line!r}: {why}")
    width = max([len(line) for line in expected] + [len("Python (after the deliberate differences)")])
    same = mproc_lines == expected
    print(f"{'Python (after the deliberate differences)':<{width}} | mproc")
    for i in range(max(len(expected), len(mproc_lines))):
        left = expected[i] if i < len(expected) else ""
        right = mproc_lines[i] if i < len(mproc_lines) else ""
        print(f"{left:<{width}} {'|' if left == right else '*'} {right}")
    if not same:
        print(f"\n{scenario}: the two sides differ (lines marked *)")
        for name, err in (("mproc", mproc_err), ("Python", python_err)):
            if err.strip():
                print(f"--- {name}'s stderr:\n{err}")
        return 1
    print(f"\n{scenario}: the same {len(expected)} lines on both sides")
    return 0


if __name__ == "__main__":
    sys.exit(main())
