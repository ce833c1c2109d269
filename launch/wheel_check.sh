#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it with its dependencies from the
# package index into a fresh venv outside the checkout (torch first, as README says), then run
# one job, a reduce and the status from another directory. `make wheel-check`; CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sensdir-wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
pip=("$tmp/venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip
"${pip[@]}" wheel -q --no-deps -w "$tmp/dist" .
"${pip[@]}" install -q "$TORCH_SPEC" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
"${pip[@]}" install -q -c constraints.txt "$tmp"/dist/sensdir-*.whl
mkdir "$tmp/work" && cd "$tmp/work"
export PATH="$tmp/venv/bin:$PATH" WANDB_MODE=disabled HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
python -c "import sensdir, sys; assert '/venv/' in sensdir.__file__, sensdir.__file__; print('sensdir from', sensdir.__file__)"
sensdir-run -m direction=real,random data.n_prompts=4 data.n_stats=40 data.n_pool=10 schedule.n_steps=5 \
  run.progress=false run.out_dir=out run.name=wheel
sensdir-reduce out/wheel --wandb disabled --bootstrap 10 --no-progress
test -s out/wheel/reduce/report.html
sensdir-status out/wheel
echo "wheel-check: the installed wheel ran a job, a reduce and the status from $PWD"
