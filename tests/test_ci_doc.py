#!/usr/bin/env python3
"""Every `run:` step of the workflow in docs/ci.md, in order, as GitHub Actions runs it (bash -e
-o pipefail), in a folder laid out as a checkout whose build/aiopt is the build under test:
without a baseline (the job passes and says so), with an unchanged baseline (passes), and with a
baseline twice as fast with no noise (the compare step fails with exit 3, so the job fails).
The build step runs scripts/setup.sh, which scripts/test.sh has already run before this test:
here it is checked to name that script and is not run again.

  tests/test_ci_doc.py AIOPT SOURCE_DIR
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from script_checks import check, verdict


def steps(markdown):
    """(name, command) of each step with `run:` in the doc's yaml block, in order."""
    block = re.search(r"```yaml\n(.*?)```", markdown, re.S).group(1)
    lines = block.split("\n")
    out, name, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- name: (.*)", line) or re.match(r"\s*name: (.*)", line)
        if m:
            name = m.group(1)
        m = re.match(r"(\s*)run: (.*)", line)
        if m and m.group(2) != "":
            if m.group(2).strip() == "|":
                indent = len(m.group(1)) + 2
                body = []
                i += 1
                while i < len(lines) and (lines[i].strip() == "" or len(lines[i]) - len(lines[i].lstrip()) >= indent):
                    body.append(lines[i][indent:])
                    i += 1
                out.append((name, "\n".join(body).strip() + "\n"))
                continue
            out.append((name, m.group(2).strip()))
        i += 1
    return out


def run_step(command, cwd, env):
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800)


def main():
    aiopt, source = sys.argv[1], pathlib.Path(sys.argv[2])
    workflow = steps((source / "docs" / "ci.md").read_text())
    names = [n for n, _ in workflow]
    print("steps:", names)
    check(names[0] == "Build" and workflow[0][1].startswith("./scripts/setup.sh"), "the first step builds with setup.sh")
    check(len(workflow) >= 4, "the workflow has its sweep, figures, compare and baseline steps")
    with tempfile.TemporaryDirectory() as folder:
        repo = pathlib.Path(folder) / "checkout"
        (repo / "build").mkdir(parents=True)
        os.symlink(os.path.abspath(aiopt), repo / "build" / "aiopt")
        for name in ("scripts", "configs", "schemas"):
            os.symlink(source / name, repo / name)
        env = dict(os.environ, GITHUB_STEP_SUMMARY=str(pathlib.Path(folder) / "summary.md"))

        def job(label):
            """Runs every step after the build; returns the compare step's exit status."""
            status = None
            for name, command in workflow[1:]:
                done = run_step(command, repo, env)
                print(f"[{label}] {name}: exit {done.returncode}")
                if name.startswith("Compare"):
                    status = done.returncode
                    if done.returncode not in (0, 3):
                        print(done.stdout, done.stderr)
                    if done.returncode != 0:
                        return status  # a failing step ends the job
                elif done.returncode != 0:
                    print(done.stdout, done.stderr)
                    check(False, f"[{label}] step {name!r} exits 0")
                    return None
            return status

        # First run of main: no baseline; the last step keeps the run as the baseline.
        check(job("no baseline") == 0, "without a baseline the job passes")
        summary = pathlib.Path(env["GITHUB_STEP_SUMMARY"]).read_text()
        check("No baseline report yet" in summary, "without a baseline the summary says so")
        for produced in ("results.jsonl", "results.json", "report.html", "figs/figures.json", "baseline.jsonl"):
            check((repo / produced).is_file(), f"the job wrote {produced}")

        # The same results as their own baseline: nothing to report.
        compare = next(c for n, c in workflow if n.startswith("Compare"))
        done = run_step(compare.replace("baseline.jsonl", "results.jsonl", 1), repo, env)
        check(done.returncode == 0 and "|" in done.stdout, f"an unchanged run passes (exit {done.returncode})")

        # A baseline twice as fast, with no noise: the compare step fails the job with exit 3.
        # Both reports are made to say the machine was idle: on a busy one compare widens its
        # allowance by the contention their contexts record (docs/report-format.md), and this
        # test is about the workflow failing the job, which an idle runner's regression does.
        # Likewise neither report's canaries, whose spread (the machine's drift) widens it too.
        def idle(record):
            if "context" in record:
                record["context"]["busy_cores"] = 0.0
                record["context"]["load_average"] = [0.0, 0.0, 0.0]
            record.pop("canary_gflops", None)
            return record

        results = [idle(json.loads(line)) for line in (repo / "results.jsonl").read_text().splitlines()]
        (repo / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
        lines = []
        for record in results:
            record = json.loads(json.dumps(record))
            timing = record.get("timing")
            if timing:
                fast = timing["median"] / 2
                for key in ("median", "mean", "min", "max"):
                    timing[key] = fast
                timing["stddev"] = timing["iqr"] = 0.0
                timing["samples"] = [fast] * len(timing.get("samples", [])) or [fast]
            lines.append(json.dumps(record))
        (repo / "baseline.jsonl").write_text("\n".join(lines) + "\n")
        done = run_step(compare, repo, env)
        print(done.stdout[-3000:])
        check(done.returncode == 3, f"a 2x slower run fails the compare step with exit 3 (got {done.returncode})")
        check("REGRESSION" in done.stdout or "SLOWER" in done.stdout, "the summary names the slowdown")
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
