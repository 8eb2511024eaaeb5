#!/usr/bin/env python3
"""--format gbench against Google Benchmark's own reader: the export of a quick bench holds the
fields Google Benchmark writes (and github-action-benchmark's googlecpp tool reads), one
benchmark per timed result with its median, and Google Benchmark's tools/compare.py (Debian's
libbenchmark-tools) compares two exports and names every benchmark.

  tests/test_gbench_export.py AIOPT
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from script_checks import check, run, verdict

COMPARE = "/usr/share/benchmark/compare.py"


def main():
    aiopt = sys.argv[1]
    if not os.path.isfile(COMPARE):
        sys.exit(f"{COMPARE} is missing: scripts/test.sh installs Debian's libbenchmark-tools, which holds "
                 "Google Benchmark's compare.py; install it to run this test")
    with tempfile.TemporaryDirectory() as folder:
        tmp = pathlib.Path(folder)
        runs = []
        for i in (1, 2):
            report = tmp / f"run{i}.json"
            run([aiopt, "bench", "--technique", "tensor_fusion", "--quick", "--progress", "never", "-o", str(report),
                 "-o", str(tmp / f"run{i}.gbench.json")])
            runs.append(report)
        # stdout, and `report` of a saved report, write the same export as -o FILE.gbench.json.
        piped = run([aiopt, "report", str(runs[0]), "--format", "gbench"]).stdout
        written = (tmp / "run1.gbench.json").read_text()
        check(json.loads(piped)["benchmarks"] == json.loads(written)["benchmarks"],
              "aiopt report --format gbench equals -o FILE.gbench.json")

        export = json.loads(written)
        ours = json.loads(runs[0].read_text())
        context = export.get("context", {})
        for key in ("date", "host_name", "executable", "num_cpus", "mhz_per_cpu", "cpu_scaling_enabled",
                    "caches", "load_avg", "library_build_type"):
            check(key in context, f"context.{key}")
        check(context.get("num_cpus") == ours["context"]["cpu"]["cores"]["logical"], "context.num_cpus")
        timed = [r for r in ours["results"] if r["status"] == "ok" and r.get("timing")]
        benchmarks = export.get("benchmarks", [])
        check(len(benchmarks) == len(timed) > 0, f"{len(benchmarks)} benchmarks for {len(timed)} timed results")
        names = [b.get("name") for b in benchmarks]
        check(len(set(names)) == len(names), "benchmark names are unique")
        for b, r in zip(benchmarks, timed):
            for key, kind in (("name", str), ("run_name", str), ("run_type", str), ("repetitions", int),
                              ("repetition_index", int), ("threads", int), ("iterations", int),
                              ("real_time", float), ("cpu_time", float), ("time_unit", str)):
                check(isinstance(b.get(key), kind), f"{b.get('name')}: {key} is a {kind.__name__}")
            check(b.get("run_type") == "iteration" and b.get("time_unit") == "ms", f"{b.get('name')}: run_type, time_unit")
            check(b["name"].startswith(f"tensor_fusion/{r['variant']}/cpu/"), f"{b['name']} names {r['variant']}")
            check(b.get("real_time") == r["timing"]["median"], f"{b['name']}: real_time is the median")
            steps = r["timing"]["count"] * r["timing"].get("steps_per_sample", 1)
            check(b.get("iterations") == steps, f"{b['name']}: iterations {b.get('iterations')} = {steps} steps timed")
            for name, metric in r["metrics"].items():
                check(b.get(name) == metric["value"], f"{b['name']}: counter {name}")

        # Google Benchmark's own compare.py reads both and names every benchmark. It needs scipy:
        # Debian's python3 has it (python3-scipy), another python3 on PATH may not.
        python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        done = run([python, COMPARE, "benchmarks", str(tmp / "run1.gbench.json"), str(tmp / "run2.gbench.json")])
        for name in names:
            check(name in done.stdout, f"compare.py lists {name}")

        # A broken export is not read by compare.py: the check above could fail.
        broken = tmp / "broken.gbench.json"
        broken.write_text(json.dumps({"context": context, "benchmarks": [{"name": "x"}]}))
        done = subprocess.run([python, COMPARE, "benchmarks", str(broken), str(broken)], capture_output=True, text=True)
        check(done.returncode != 0, "compare.py rejects benchmarks without times")

    return verdict()


if __name__ == "__main__":
    sys.exit(main())
