#!/usr/bin/env bash
# Runs an aiopt sweep on a Slurm cluster as a job array, one shard per task, then a dependent job
# that merges the shards into one report and draws its figures (docs/cluster.md).
#   scripts/slurm_sweep.sh FILE [-n TASKS] [-o OUTDIR] [--aiopt PATH] [--wait] [-- SBATCH_ARGS...]
#     FILE        an experiment file, or the name of one that ships with aiopt (ci)
#     -n TASKS    array tasks, each running shard i/TASKS of the sweep (default 4)
#     -o OUTDIR   where shards, logs, the merged report and figures go (default aiopt-sweep-<date>);
#                 it must be on a file system every node sees
#     --aiopt P   the aiopt binary the nodes run (default: build/aiopt beside this script, else aiopt)
#     --wait      return when the merge job has ended, with its exit status
#     SBATCH_ARGS passed to both sbatch calls (--partition, --time, --cpus-per-task, ...)
# Prints the two job ids. Each task's cases are a baseline with its variants, so every shard can
# compare them; the merge job runs whatever the tasks ended with (a failed case is in its shard).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "slurm_sweep.sh: error: $*" >&2; exit 2; }

file="" tasks=4 out="" aiopt="" wait=() sbatch_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n) [ $# -ge 2 ] || die "-n needs a number"; tasks=$2; shift ;;
    -o) [ $# -ge 2 ] || die "-o needs a folder"; out=$2; shift ;;
    --aiopt) [ $# -ge 2 ] || die "--aiopt needs a path"; aiopt=$2; shift ;;
    --wait) wait=(--wait) ;;
    -h|--help) usage; exit 0 ;;
    --) shift; sbatch_args=("$@"); break ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$file" ] || die "one experiment file only ('$file', then '$1')"; file=$1 ;;
  esac
  shift
done
[ -n "$file" ] || { usage >&2; exit 2; }
[[ "$tasks" =~ ^[1-9][0-9]*$ ]] || die "-n takes a whole number >= 1, not '$tasks'"
command -v sbatch >/dev/null || die "sbatch not found: this runs on a Slurm cluster's login node"
if [ -z "$aiopt" ]; then
  if [ -x "$here/../build/aiopt" ]; then aiopt="$here/../build/aiopt"; else aiopt=$(command -v aiopt || true); fi
fi
[ -n "$aiopt" ] && [ -x "$aiopt" ] || die "no aiopt binary (build it, or pass --aiopt PATH)"
aiopt=$(realpath "$aiopt")
plot="$here/plot.py"
out=${out:-aiopt-sweep-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(realpath "$out")

# The experiment file is checked (and found by name) here, before anything is queued.
"$aiopt" sweep "$file" --dry-run > "$out/plan.txt" || die "the experiment file did not load (see above)"
file_arg=$file
[ -f "$file" ] && file_arg=$(realpath "$file")
cases=$(tail -n 1 "$out/plan.txt")
echo "slurm_sweep.sh: $cases in $tasks tasks; output in $out"

q() { printf '%q' "$1"; }
array=$(sbatch --parsable --job-name=aiopt-sweep --array="0-$((tasks - 1))" \
  --output="$out/slurm-%A_%a.log" "${sbatch_args[@]}" \
  --wrap="$(q "$aiopt") sweep $(q "$file_arg") --shard \$SLURM_ARRAY_TASK_ID/\$SLURM_ARRAY_TASK_COUNT \
-o $(q "$out")/shard_\$SLURM_ARRAY_TASK_ID.jsonl --progress never --format json > /dev/null")
array=${array%%;*}
merge=$(sbatch --parsable --job-name=aiopt-merge --dependency="afterany:$array" \
  --output="$out/slurm-merge-%j.log" "${wait[@]}" "${sbatch_args[@]}" \
  --wrap="$(q "$aiopt") report $(q "$out")/shard_*.jsonl -o $(q "$out")/report.json -o $(q "$out")/report.md \
&& python3 $(q "$plot") $(q "$out")/report.json -o $(q "$out")/figs --html $(q "$out")/report.html")
merge=${merge%%;*}
echo "slurm_sweep.sh: array job $array, merge job $merge"
