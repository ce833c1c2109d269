"""What differs between the jobs of a sweep: their resolved configs and provenance flattened to
dotted keys, split into what all jobs share and what varies, so a report shows each once."""

from __future__ import annotations

from typing import Any


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}."))
    return out


def split_common(per_job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(settings every job has with the same value, per job the settings that differ)."""
    flat = {job: flatten(d) for job, d in per_job.items()}
    keys = sorted(set().union(*flat.values())) if flat else []
    missing = object()
    varying = [k for k in keys if len({repr(f.get(k, missing)) for f in flat.values()}) > 1]
    common = {k: v for k, v in next(iter(flat.values())).items() if k not in varying} if flat else {}
    return common, {job: {k: f.get(k) for k in varying} for job, f in sorted(flat.items())}
