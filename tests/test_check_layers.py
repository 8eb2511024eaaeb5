#!/usr/bin/env python3
"""scripts/check_layers.py fails on an upward include and passes a tree without one.

  tests/test_check_layers.py SCRIPT
"""
import pathlib
import subprocess
import sys
import tempfile


def tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def check(script, files):
    with tempfile.TemporaryDirectory() as folder:
        root = pathlib.Path(folder)
        tree(root, files)
        done = subprocess.run([sys.executable, script, "--root", str(root)],
                              capture_output=True, text=True)
        return done.returncode, done.stdout


def main():
    script = sys.argv[1]
    downward = {
        "src/core/tensor.hpp": '#pragma once\n',
        "src/report/result.hpp": '#pragma once\n#include "core/tensor.hpp"\n#include <vector>\n',
        "src/cli/app.cpp": '#include "report/result.hpp"\n',
        "techniques/kv/kv.cpp": '#include "report/result.hpp"\n',
        "src/main.cpp": '#include "cli/app.hpp"\n',
    }
    failures = []
    code, out = check(script, downward)
    if code != 0 or out:
        failures.append(f"a tree of downward includes: exit {code}, output {out!r}; expected 0 and none")

    upward = dict(downward)
    upward["src/report/result.hpp"] += '#include "harness/technique.hpp"\n'
    upward["src/kernels/cpu/gemm.cpp"] = '// x\n#include "nn/gpt.hpp"\n'
    upward["techniques/kv/kv.hpp"] = '#include "cli/app.hpp"\n'
    code, out = check(script, upward)
    expected = ["src/report/result.hpp:4: layer 'report' includes 'harness'",
                "src/kernels/cpu/gemm.cpp:2: layer 'kernels' includes 'nn'",
                "techniques/kv/kv.hpp:1: layer 'techniques' includes 'cli'"]
    if code != 1:
        failures.append(f"three upward includes: exit {code}; expected 1")
    for line in expected:
        if line not in out:
            failures.append(f"three upward includes: output lacks {line!r}:\n{out}")

    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
