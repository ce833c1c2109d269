"""Benchmark of the reduce on generated shards: 10^6 perturbation rows x 100 steps.

    python bench/reduce_bench.py [--rows 1000000] [--rows-per-file 10000] [--steps 100] [--dir D] [--keep]

Shards are generated (numpy + pyarrow, the schema of docs/shards.md) into a temporary
directory, then ``reduce_sweep`` runs in a child process with W&B disabled, so that its peak
resident memory (``getrusage``) is the reduce's alone. Prints and writes bench_reduce.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIRECTIONS = ("real", "random", "synth_struct", "synth_baseline")


def generate(sweep: Path, rows: int, per_file: int, steps: int) -> float:
    from sensdir.reduce.synthetic import JobSpec, make_sweep

    per_dir = rows // len(DIRECTIONS)
    specs = [JobSpec(d, per_dir, shards=max(1, per_dir // per_file), n_steps=steps) for d in DIRECTIONS]
    t0 = time.perf_counter()
    make_sweep(sweep, specs)
    return time.perf_counter() - t0


def child(sweep: str, out: str, bootstrap: int) -> None:
    from sensdir.reduce import reduce_sweep

    t0 = time.perf_counter()
    res = reduce_sweep(sweep, out, wandb="disabled", n_bootstrap=bootstrap, progress=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(json.dumps({"wall_s": wall, "peak_rss_mib": peak, "n_rows": res.n_rows, "complete": res.completeness.ok}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rows-per-file", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--dir", default=None, help="where to generate (default: a temporary directory, deleted after)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", default="bench_reduce.json")
    p.add_argument("--child", nargs=2, metavar=("SWEEP", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(*a.child, a.bootstrap)
    root = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="sensdir-bench-"))
    sweep = root / "sweep"
    try:
        gen_s = generate(sweep, a.rows, a.rows_per_file, a.steps)
        size = sum(f.stat().st_size for f in sweep.rglob("*.parquet"))
        n_files = len(list(sweep.rglob("*.parquet")))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(sweep), str(root / "reduce"), "--bootstrap", str(a.bootstrap)],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        outer = time.perf_counter() - t0
        inner = json.loads(proc.stdout.strip().splitlines()[-1])
        result = {
            "rows": a.rows,
            "steps": a.steps,
            "files": n_files,
            "parquet_bytes": size,
            "generate_s": round(gen_s, 1),
            "reduce_wall_s": round(inner["wall_s"], 1),
            "process_wall_s": round(outer, 1),
            "reduce_peak_rss_mib": round(inner["peak_rss_mib"], 1),
            "rows_reduced": inner["n_rows"],
            "complete": inner["complete"],
            "bootstrap": a.bootstrap,
            "wandb": "disabled",
        }
        print(json.dumps(result, indent=2))
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if not a.keep and not a.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
