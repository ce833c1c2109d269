"""``python -m sensdir.bench``: the cases, the blowup run, the targets, ``bench.json``."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sensdir.bench.blowup import blowup_wall_time
from sensdir.bench.cases import N_STEPS, Case, embedded_model, gpt2_shaped_model, matmul_gflops, run_case


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="sensdir's engine against the papers' computation")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", default="bench.json")
    p.add_argument("--quick", action="store_true", help="fewer prompts, skip the blowup run (a smoke test)")
    p.add_argument("--blowup-prompts", type=int, default=1000)
    p.add_argument("--blowup-dtype", default=None, help="dtype of the blowup run (default: --dtype)")
    p.add_argument("--skip-blowup", action="store_true")
    p.add_argument("--only-blowup", action="store_true", help="skip the engine-vs-naive cases")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--no-compile", action="store_true", help="the engine without its torch.compile'd KL kernel")
    p.add_argument("--repeats", type=int, default=3, help="timed passes of each path per case (medians reported)")
    return p


def _cases(args, device) -> list[Case]:
    q = args.quick
    cases = [
        Case("embedded", 10, 16 if q else 256, 2 if q else 8),
        Case("embedded", 128, 4 if q else 64, 1 if q else 4),
        Case("gpt2-shaped", 10, 4 if q else 64, 1 if q else 4),
        Case("gpt2-shaped", 128, 2 if q else 16, 1 if q else 2),
    ]
    if args.only_blowup:
        cases = []
    if device.type == "cuda" and not q:
        cases = [replace(c, engine_prompts=c.engine_prompts * 16, naive_prompts=c.naive_prompts * 4) for c in cases]
    from sensdir.loading import embedded_model_dir

    if not (embedded_model_dir() / "model.safetensors").exists():
        print(f"no embedded model at {embedded_model_dir()}: its cases are skipped")
        cases = [c for c in cases if c.model != "embedded"]
    return cases


def _run_cases(args, cases: list[Case], device, dtype, gen, ref_gflops: float) -> list[dict]:
    results = []
    loaded: dict = {}
    for case in cases:
        if case.model not in loaded:
            loaded.clear()
            loaded[case.model] = (embedded_model if case.model == "embedded" else gpt2_shaped_model)(device, dtype)
        r = run_case(
            loaded[case.model], case, device, args.batch_size, gen, not args.no_compile, 1 if args.quick else args.repeats
        )
        r["matmul_gflops"] = ref_gflops
        results.append(r)
        print(
            f"{r['model']:>12} n_ctx {r['n_ctx']:>3}: naive {r['naive_steps_per_s']:>9.1f} steps/s, "
            f"engine {r['engine_steps_per_s']:>10.1f} steps/s, x{r['speedup']:.1f}; "
            f"rel diff kl {r['max_rel_diff_kl']:.1e} l2 {r['max_rel_diff_l2']:.1e}; "
            f"peak {r['peak_mem_mb']:.0f} MB (naive {r['naive_peak_mem_mb']:.0f}); "
            f"{r['engine_gflops']:.0f} GFLOP/s (naive {r['naive_gflops']:.0f}) of {ref_gflops:.0f}",
            flush=True,
        )
    return results


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    gen = torch.Generator().manual_seed(0)
    ref_gflops = matmul_gflops(device, dtype)
    print(f"device {device}, dtype {args.dtype}, threads {torch.get_num_threads()}, matmul {ref_gflops:.0f} GFLOP/s")

    q = args.quick
    results = _run_cases(args, _cases(args, device), device, dtype, gen, ref_gflops)
    out: dict[str, Any] = {"cases": results, "matmul_gflops": ref_gflops, "threads": torch.get_num_threads()}
    if args.only_blowup and Path(args.out).exists():  # keep the cases of an earlier full run
        out["cases"] = json.loads(Path(args.out).read_text()).get("cases", [])
    if not (q or args.skip_blowup):
        with tempfile.TemporaryDirectory() as tmp:
            b = blowup_wall_time(device, args.blowup_dtype or args.dtype, args.blowup_prompts, Path(tmp))
        out["blowup"] = b
        print(
            f"blowup experiment ({b['n_prompts']} prompts x 4 types x {N_STEPS} steps, gpt2-shaped, {b['dtype']}): "
            f"{b['total_s']:.0f} s  " + ", ".join(f"{k} {v:.0f} s" for k, v in b["per_direction_s"].items())
        )
    out["targets"] = targets(out)
    if q:
        print("(--quick: a few prompts per case; the target checks below are not representative)")
    for t in out["targets"]:
        print(f"target {t['target']}: {t['measured']} -> {'met' if t['met'] else 'NOT met'}")
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {os.path.abspath(args.out)}")


def targets(out: dict) -> list[dict]:
    """The issue's targets for the 2-core CPU, checked against this run's numbers (they are
    printed for any device; only a CPU run is judged against them)."""
    checks = []
    for c in out["cases"]:
        want = 15 if c["n_ctx"] == 10 else 40
        checks.append(
            {
                "target": f"{c['model']} n_ctx {c['n_ctx']}: speedup >= {want}x",
                "measured": f"x{c['speedup']:.1f}",
                "met": c["speedup"] >= want,
            }
        )
        worst = max(c["max_rel_diff_kl"], c["max_rel_diff_l2"])
        checks.append(
            {
                "target": f"{c['model']} n_ctx {c['n_ctx']}: KL and L2 within 1e-4 relative",
                "measured": f"{worst:.1e}",
                "met": worst <= 1e-4,
            }
        )
    if "blowup" in out and out["blowup"]["n_prompts"] == 1000:  # the target is for the full experiment
        total = out["blowup"]["total_s"]
        checks.append({"target": "blowup experiment <= 600 s", "measured": f"{total:.0f} s", "met": total <= 600})
    return checks
