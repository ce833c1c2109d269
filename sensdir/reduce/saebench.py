"""Per-SAE summaries in SAEBench's output layout, so that sensitivity results sit beside the
SAEBench evals of the same SAEs: ``saebench/<eval type>/<release>_<sae id>_eval_results.json``
with ``eval_type_id``, ``eval_config``, ``eval_id``, ``datetime_epoch_millis``,
``eval_result_metrics`` (category -> metric -> number), ``eval_result_details`` (a record per
direction type), ``eval_result_unstructured`` (every tidy row of that SAE), ``sae_lens_id``,
``sae_lens_release_id``, ``sae_lens_version``, ``sae_bench_commit_hash`` (null: not SAEBench's
code) and ``sae_cfg_dict``. Field names follow SAEBench's published results files; the values
are sensdir's own.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from sensdir.artifacts.records import dumps_json, write_text_atomic

EVAL_TYPE = "sensdir_sensitive_directions"
# The statistics that become SAEBench metrics (the rest stays in the unstructured rows).
_METRIC_STATS = ("mean", "median", "censored_fraction", "mean_uncensored", "ks_vs_real", "ks_vs_real_uncensored")


def _sae_ids(configs: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """The reduce's SAE label -> (release, sae id), from the jobs' configs."""
    from sensdir.reduce.read import sae_label

    return {
        sae_label(cfg): (str((cfg.get("sae") or {}).get("release")), str((cfg.get("sae") or {}).get("sae_id")))
        for cfg in configs.values()
    }


def _metrics(rows: list[dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["value"] is None:
            continue
        if r["section"] == "summary" and r["statistic"] in _METRIC_STATS:
            out.setdefault(r["metric"], {})[f"{r['direction']}_{r['statistic']}"] = r["value"]
        elif r["section"] == "diagnostics":
            at = f"_t{r['x']:g}" if r["x"] is not None else ""
            out.setdefault("diagnostics", {})[f"{r['metric']}{at}_{r['direction']}"] = r["value"]
    return out


def _details(rows: list[dict]) -> list[dict[str, Any]]:
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["section"] == "summary" and r["value"] is not None:
            per.setdefault(r["direction"], {"direction": r["direction"], "schedule": r["schedule"], "hook": r["hook"]})[
                f"{r['metric']}_{r['statistic']}"
            ] = r["value"]
    return list(per.values())


def write_saebench(out_dir: Path, sweep_name: str, table: pa.Table, configs: dict, versions: dict, settings: dict) -> list[Path]:
    """One SAEBench-layout JSON per SAE of the sweep's walk statistics; the paths written."""
    ids = _sae_ids(configs)
    rows = [r for r in table.to_pylist() if r["section"] in ("summary", "diagnostics", "target_facts")]
    written = []
    for sae in sorted({r["sae"] for r in rows} - {"none"}):  # sae.source=none: no SAE to file results under
        release, sae_id = ids.get(sae, ("", sae))
        mine = [r for r in rows if r["sae"] == sae]
        record = {
            "eval_type_id": EVAL_TYPE,
            "eval_config": {"sweep": sweep_name, **settings},
            "eval_id": hashlib.sha256(f"{sweep_name}/{release}/{sae_id}".encode()).hexdigest()[:32],
            "datetime_epoch_millis": int(time.time() * 1000),
            "eval_result_metrics": _metrics(mine),
            "eval_result_details": _details(mine),
            "eval_result_unstructured": mine,
            "sae_bench_commit_hash": None,
            "sae_lens_id": sae_id,
            "sae_lens_release_id": release,
            "sae_lens_version": versions.get("sae-lens"),
            "sae_cfg_dict": {"hooks": sorted({r["hook"] for r in mine})},
        }
        name = f"{release}_{sae_id}".replace("/", "_") + "_eval_results.json"
        path = out_dir / "saebench" / EVAL_TYPE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, dumps_json(record))
        written.append(path)
    return written
