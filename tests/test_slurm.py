#!/usr/bin/env python3
"""scripts/slurm_sweep.sh against a real Slurm: this test starts a one-node cluster on localhost
(Debian's slurm-wlm and munge; slurmctld and slurmd with a configuration of its own, on free
ports, state in a temporary folder), runs a small sweep as a 3-task job array plus the dependent
merge job, and checks the merged report holds exactly a plain sweep's cases, each ok, with the
figures and the HTML page drawn. It needs root (slurmd and munged run as root and munge).

  tests/test_slurm.py AIOPT SOURCE_DIR
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from script_checks import check, run, verdict

SMALL_SWEEP = """settings:
  quick: true
experiments:
  - technique: tensor_fusion
    params:
      chain: [bias_gelu, layernorm, softmax]
      rows: 64
      hidden: 64
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(tool):
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.access(f"/usr/sbin/{tool}", os.X_OK) else None)
    if not path:
        sys.exit(f"{tool} not found: scripts/test.sh installs Debian's slurm-wlm and munge; install them to run this test")
    return path


def start_munge():
    """munged running, as the munge user; a credential round trip proves it."""
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        munged = need("munged")
        if os.geteuid() != 0:
            sys.exit("munged is not running and this test is not root: start munge (systemctl start munge) first")
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        run(["su", "-s", "/bin/sh", "munge", "-c", munged])
    done = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"munge does not work here: {done.stderr.strip()}")


def main():
    aiopt, source = os.path.abspath(sys.argv[1]), pathlib.Path(sys.argv[2])
    slurmctld, slurmd = need("slurmctld"), need("slurmd")
    need("sbatch")
    if os.geteuid() != 0:
        sys.exit("this test starts slurmd, which runs as root: run it as root (CI machines are)")
    start_munge()
    host = socket.gethostname().split(".")[0]
    with tempfile.TemporaryDirectory() as folder:
        tmp = pathlib.Path(folder)
        for sub in ("state", "spool", "log"):
            (tmp / sub).mkdir()
        conf = tmp / "slurm.conf"
        conf.write_text(f"""ClusterName=aiopt-test
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/log/slurmctld.log
SlurmdLogFile={tmp}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
        env = dict(os.environ, SLURM_CONF=str(conf))
        started = time.monotonic()
        try:
            run([slurmctld, "-f", str(conf)])
            run([slurmd, "-f", str(conf)])
            for _ in range(60):
                done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
                if done.returncode == 0 and done.stdout.strip() in ("idle", "mixed"):
                    break
                time.sleep(1)
            else:
                logs = "".join((tmp / "log" / f).read_text()[-2000:] for f in ("slurmctld.log", "slurmd.log")
                               if (tmp / "log" / f).exists())
                sys.exit(f"the one-node cluster did not come up: sinfo says {done.stdout.strip()!r} "
                         f"{done.stderr.strip()}\n{logs}")
            print(f"cluster up in {time.monotonic() - started:.1f} s")

            sweep = tmp / "small.yaml"
            sweep.write_text(SMALL_SWEEP)
            out = tmp / "out"
            done = subprocess.run([str(source / "scripts" / "slurm_sweep.sh"), str(sweep), "-n", "3", "-o", str(out),
                                   "--aiopt", aiopt, "--wait"], env=env, capture_output=True, text=True, timeout=1200)
            print(done.stdout, done.stderr)
            check(done.returncode == 0, f"slurm_sweep.sh --wait exits 0 (got {done.returncode})")
            shards = sorted(p.name for p in out.glob("shard_*.jsonl"))
            check(shards == ["shard_0.jsonl", "shard_1.jsonl", "shard_2.jsonl"], f"three shards: {shards}")

            plain = tmp / "plain.jsonl"
            run([aiopt, "sweep", str(sweep), "-o", str(plain), "--progress", "never", "--format", "json"])

            def cases(results):
                return sorted(json.dumps([r["technique"], r["variant"], r["device"], r["params"]], sort_keys=True)
                              for r in results)

            plain_results = [json.loads(line) for line in plain.read_text().splitlines()[1:]]
            merged = json.loads((out / "report.json").read_text())
            check(cases(merged["results"]) == cases(plain_results) and len(plain_results) == 6,
                  f"the merged report holds the plain sweep's {len(plain_results)} cases "
                  f"(merged {len(merged['results'])})")
            check(all(r["status"] == "ok" for r in merged["results"]), "every case ok")
            check(len(merged["comparisons"]) == 3, "each shard kept its baseline: 3 comparisons")
            check((out / "report.html").is_file() and (out / "figs" / "figures.json").is_file(),
                  "the merge job drew the figures and the HTML page")
        finally:
            subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)
            time.sleep(1)
            for pid_file in ("slurmd.pid", "slurmctld.pid"):
                path = tmp / pid_file
                if path.exists():
                    try:
                        os.kill(int(path.read_text().strip()), 15)
                    except (ProcessLookupError, ValueError):
                        pass
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
