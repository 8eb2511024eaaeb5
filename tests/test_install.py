#!/usr/bin/env python3
"""cmake --install into a temporary prefix: the binary, the experiment files, plot.py, the schema
and the bash completion land there; the installed aiopt finds an experiment file by name in its
own share/aiopt/configs; the completion completes subcommands, techniques and parameters.

  tests/test_install.py BUILD_DIR
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from script_checks import check, run, verdict


def complete(completion, aiopt_dir, words):
    """COMPREPLY of the completion for the command line `words` (the last word being completed)."""
    script = (f'export PATH="{aiopt_dir}:$PATH"; source "{completion}"; '
              f'COMP_WORDS=({" ".join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; '
              '_aiopt; printf "%s\\n" "${COMPREPLY[@]}"')
    done = run(["bash", "-c", script])
    return [w for w in done.stdout.split("\n") if w]


def main():
    build = sys.argv[1]
    with tempfile.TemporaryDirectory() as folder:
        prefix = pathlib.Path(folder) / "prefix"
        run(["cmake", "--install", build, "--prefix", str(prefix)])
        aiopt = prefix / "bin" / "aiopt"
        share = prefix / "share" / "aiopt"
        for path in (aiopt, share / "configs" / "ci.yaml", share / "scripts" / "plot.py",
                     share / "scripts" / "report_html.py", share / "schemas" / "report.schema.json",
                     prefix / "share" / "bash-completion" / "completions" / "aiopt"):
            check(path.is_file(), f"installed: {path.relative_to(prefix)}")
        check(os.access(aiopt, os.X_OK) and os.access(share / "scripts" / "plot.py", os.X_OK),
              "aiopt and plot.py are executable")

        # Found by name in the installed configs (a file only there, so not the source tree's).
        (share / "configs" / "only_installed.yaml").write_text(
            "experiments:\n  - technique: tensor_fusion\n    params:\n      rows: 64\n      hidden: 64\n")
        env = {k: v for k, v in os.environ.items() if k != "AIOPT_CONFIG_DIR"}
        done = subprocess.run([str(aiopt), "sweep", "only_installed", "--dry-run"], capture_output=True,
                              text=True, env=env, cwd=folder)
        check(done.returncode == 0 and "cases" in done.stdout,
              f"the installed aiopt finds only_installed.yaml: {done.returncode} {done.stderr.strip()}")
        done = subprocess.run([str(aiopt), "sweep", "absent_experiment"], capture_output=True, text=True,
                              env=env, cwd=folder)
        check(done.returncode == 2 and str(share / "configs") in done.stderr and "only_installed" in done.stderr,
              f"an unknown name: exit 2 naming the folders and files: {done.stderr.strip()}")
        done = run([sys.executable, str(share / "scripts" / "plot.py"), "--help"])
        check("--html" in done.stdout, "the installed plot.py runs")

        completion = prefix / "share" / "bash-completion" / "completions" / "aiopt"
        bindir = str(prefix / "bin")
        check("bench" in complete(completion, bindir, ["aiopt", "be"]), "completes a subcommand")
        techniques = [t["name"] for t in json.loads(run([str(aiopt), "list", "--format", "json"]).stdout)]
        words = complete(completion, bindir, ["aiopt", "bench", "--technique", ""])
        check(sorted(words) == sorted(techniques), f"completes every technique: {words}")
        words = complete(completion, bindir, ["aiopt", "bench", "--technique", "kv_caching", "--set", "gen"])
        check(words == ["gen_tokens="], f"completes a parameter of the technique: {words}")
        words = complete(completion, bindir, ["aiopt", "bench", "--technique", "kv_caching", "--variant", ""])
        check("kv_cache_int8" in words and "recompute" in words, f"completes variants: {words}")
        words = complete(completion, bindir, ["aiopt", "sweep", "only_"])
        check("only_installed" in words, f"completes a shipped experiment: {words}")
        check("--threads" in complete(completion, bindir, ["aiopt", "bench", "--thr"]), "completes a flag")
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
