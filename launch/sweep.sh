#!/usr/bin/env bash
# Submit a sensdir multirun as one SLURM array, and its reduce as a job that waits for it.
#
#   launch/sweep.sh NAME [override ...]
#
# runs  python -m sensdir.run -m hydra/launcher=slurm run.name=NAME run.out_dir=$OUT_DIR override...
# in the background (the "driver": it submits the array, waits for every task, requeues nothing
# itself, and exits non-zero if a task failed; its log is <sweep dir>/driver.log, its exit status
# <sweep dir>/driver.exit; a sweep of one job is submitted as a plain job, not an array), then submits
#   python -m sensdir.status <sweep dir> && python -m sensdir.reduce $OUT_DIR/NAME
# with --dependency=afterany:<array id>: it starts once every task of the array has ended
# (requeued tasks included) and reduces only if every task is done; the reduce's own
# completeness check then fails, naming the rows, if a shard is missing, corrupt or duplicated.
# hydra/launcher=slurm_local among the overrides replaces hydra/launcher=slurm: it sizes the
# tasks for the one-node cluster of launch/local_slurm.sh.
#
# Environment:
#   PYTHON             interpreter (default: .venv/bin/python if present, else python)
#   OUT_DIR            results root (default: results)
#   REDUCE_DEPENDENCY  afterany (default) or afterok (reduce only if every task exited 0)
#   REDUCE_ARGS        more arguments of sensdir.reduce, e.g. "--wandb offline"; with
#                      --allow-partial the status gate is skipped
#   REDUCE_SBATCH      sbatch options of the reduce job, e.g. "--partition=cpu --time=60 --mem=16G"
#   NO_REDUCE=1        submit the sweep only
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
NAME=$1
shift
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=$PWD/.venv/bin/python; else PYTHON=python; fi
fi
OUT_DIR=${OUT_DIR:-results}
SWEEP_DIR=$OUT_DIR/$NAME/hydra/$(date +%Y-%m-%d_%H-%M-%S)-$$  # $$: two launches in one second get their own folders
mkdir -p "$SWEEP_DIR"

# the driver's exit status goes to <sweep dir>/driver.exit when it ends
nohup bash -c '"$@"; echo $? >"$0"' "$SWEEP_DIR/driver.exit" \
  "$PYTHON" -m sensdir.run -m hydra/launcher=slurm "run.name=$NAME" "run.out_dir=$OUT_DIR" \
  "hydra.sweep.dir=$SWEEP_DIR" "$@" >"$SWEEP_DIR/driver.log" 2>&1 </dev/null &
DRIVER=$!
echo "$DRIVER" >"$SWEEP_DIR/driver.pid"

# submitit names each task's folder <array id>_<task index> as soon as the array is submitted,
# or <job id> where the sweep has a single job (submitit submits it as a plain job)
ARRAY=
for _ in $(seq 1 600); do
  ARRAY=$(ls "$SWEEP_DIR/.submitit" 2>/dev/null | sed -n 's/^\([0-9][0-9]*\)\(_[0-9][0-9]*\)\{0,1\}$/\1/p' | head -n 1 || true)
  [ -n "$ARRAY" ] && break
  if ! kill -0 "$DRIVER" 2>/dev/null; then
    echo "launch: the sweep exited before submitting anything; $SWEEP_DIR/driver.log says:" >&2
    tail -n 30 "$SWEEP_DIR/driver.log" >&2
    exit 1
  fi
  sleep 1
done
if [ -z "$ARRAY" ]; then
  echo "launch: no array submitted after 10 minutes; see $SWEEP_DIR/driver.log" >&2
  exit 1
fi
# the array's size from its submission script (#SBATCH --array=0-<last>%<at once>; the folder
# <array id> holds it beside the tasks' <array id>_<index>); a sweep of one job has no such line
SUBMISSION=$SWEEP_DIR/.submitit/$ARRAY/${ARRAY}_submission.sh
for _ in 1 2 3 4 5; do [ -s "$SUBMISSION" ] && break; sleep 1; done
LAST=$(sed -n 's/^#SBATCH --array=0-\([0-9][0-9]*\).*/\1/p' "$SUBMISSION" 2>/dev/null | head -n 1 || true)
N_TASKS=$((${LAST:-0} + 1))
echo "sweep:  array $ARRAY, $N_TASKS task(s); driver pid $DRIVER, log $SWEEP_DIR/driver.log"
# a task that cannot start on this cluster as asked pends for ever: say so now, with SLURM's reason
for _ in 1 2 3 4 5; do
  WHY=$(squeue -h -r -j "$ARRAY" -o '%i %r' 2>/dev/null | grep -E ' (PartitionConfig|BadConstraints|PartitionNodeLimit|PartitionTimeLimit|ReqNodeNotAvail|InvalidAccount|InvalidQOS|PartitionDown|NodeDown)' || true)
  [ -n "$WHY" ] && break
  sleep 1
done
if [ -n "$WHY" ]; then
  echo "launch: warning: task(s) that cannot start as asked (SLURM's reason; check partition, cpus_per_task, mem_gb, gres):" >&2
  echo "$WHY" | head -n 5 | sed 's/^/  /' >&2
fi

if [ "${NO_REDUCE:-0}" != 1 ]; then
  GATE="$PYTHON -m sensdir.status $SWEEP_DIR || { rc=\$?; echo \"reduce skipped: sensdir.status $SWEEP_DIR exited \$rc (not every task is done)\"; exit \$rc; }; "
  case " ${REDUCE_ARGS:-} " in *" --allow-partial "*) GATE= ;; esac
  # shellcheck disable=SC2086  # REDUCE_SBATCH is a list of options
  REDUCE=$(sbatch --parsable --job-name="sensdir-reduce-$NAME" \
    --dependency="${REDUCE_DEPENDENCY:-afterany}:$ARRAY" --kill-on-invalid-dep=yes \
    --output="$OUT_DIR/$NAME/reduce-%j.log" ${REDUCE_SBATCH:-} \
    --wrap="${GATE}$PYTHON -m sensdir.reduce $OUT_DIR/$NAME --no-progress ${REDUCE_ARGS:-}")
  echo "reduce: job $REDUCE after ${REDUCE_DEPENDENCY:-afterany}:$ARRAY, log $OUT_DIR/$NAME/reduce-$REDUCE.log"
fi
echo "status: $PYTHON -m sensdir.status $OUT_DIR/$NAME"
