"""One self-contained HTML report: tables, figures embedded as base64 PNG, completeness,
the sweep's resolved configs and provenance. Opens from disk with no server."""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from sensdir.reduce.completeness import Completeness
from sensdir.reduce.differences import split_common

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0}td.s{text-align:left}
pre{background:#f7f7f7;padding:0.6em;overflow-x:auto;font-size:12px}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:0.6em 1em}
.ok{background:#e8f5e9;border:1px solid #80c080;padding:0.6em 1em}
img{max-width:100%}
"""

_WIDE_STATS = ("mean", "sd", "median", "ci95_low", "ci95_high", "ks_vs_real", "ks_pvalue_vs_real")
_CENSORED_STATS = (
    "censored_fraction",
    "mean_uncensored",
    "sd_uncensored",
    "median_uncensored",
    "ks_vs_real_uncensored",
    "ks_pvalue_vs_real_uncensored",
)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td{' class=s' if isinstance(v, str) else ''}>{_fmt(v)}</td>" for v in r) + "</tr>")
    return "\n".join(out) + "</table>"


def summary_html(table: pa.Table) -> str:
    """The summary section pivoted wide: one row per (group, metric), one column per statistic."""
    wide: dict[tuple, dict[str, Any]] = {}
    for r in table.to_pylist():
        if r["section"] != "summary":
            continue
        key = (r["metric"], r["direction"], r["schedule"], r["sae"], r["hook"])
        d = wide.setdefault(key, {"n": None})
        d[r["statistic"]] = r["value"]
        if r["statistic"] == "mean":
            d["n"] = r["n"]
    rows = [
        [*k, d["n"], *(d.get(s) for s in (*_WIDE_STATS, *_CENSORED_STATS))]
        for k, d in sorted(wide.items(), key=lambda kv: kv[0][0])
    ]
    return _table(["metric", "direction", "schedule", "sae", "hook", "n", *_WIDE_STATS, *_CENSORED_STATS], rows)


def thresholds_html(thresholds: dict[str, dict[str, Any]]) -> str:
    """The rule that set each job's plateau threshold, once per distinct rule."""
    rules: dict[str, list[str]] = {}
    for job, t in sorted(thresholds.items()):
        rules.setdefault(str(t.get("plateau_rule_text", t.get("plateau_l2"))), []).append(job)
    if not rules:
        return ""
    items = "".join(
        f"<li>{html.escape(rule)} <small>({html.escape(', '.join(jobs))})</small></li>" for rule, jobs in rules.items()
    )
    return f"<p>Plateau threshold (final-residual L2):</p><ul>{items}</ul>"


def facts_html(table: pa.Table) -> str:
    """Target facts pivoted: one row per group, ``mean ± sd`` per fact."""
    wide: dict[tuple, dict[str, dict[str, float]]] = {}
    for r in table.to_pylist():
        if r["section"] == "target_facts":
            key = (r["direction"], r["schedule"], r["sae"], r["hook"])
            wide.setdefault(key, {}).setdefault(r["metric"], {})[r["statistic"]] = r["value"]
    facts = sorted({f for d in wide.values() for f in d})
    if not facts:
        return ""

    def cell(v: dict[str, float] | None) -> str:
        if not v or v.get("mean") is None:
            return ""
        return f"{v['mean']:.4g} ± {v['sd']:.2g}" if v.get("sd") is not None else f"{v['mean']:.4g}"

    rows = [[*k, *(cell(d.get(f)) for f in facts)] for k, d in sorted(wide.items())]
    return _table(["direction", "schedule", "sae", "hook", *facts], rows)


def differences_html(per_job: dict[str, Any], what: str) -> str:
    """What all jobs share, once, and a table of what differs between them."""
    common, varying = split_common(per_job)
    keys = sorted({k for d in varying.values() for k in d})
    out = ""
    if keys:
        out += f"<h3>{what}: what differs between jobs</h3>" + _table(
            ["job", *keys], [[j, *(d.get(k) for k in keys)] for j, d in varying.items()]
        )
    out += f"<details><summary>{what}: shared by every job ({len(common)} settings)</summary><pre>"
    out += html.escape(json.dumps(common, indent=2, default=str, sort_keys=True)) + "</pre></details>"
    return out


def _section_rows(table: pa.Table, section: str) -> str:
    rows = [r for r in table.to_pylist() if r["section"] == section]
    cols = ["direction", "schedule", "sae", "hook", "metric", "statistic", "x", "value", "n"]
    return _table(cols, [[r[c] for c in cols] for r in rows])


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></figure>'


def _plain_table(table: pa.Table, max_rows: int = 500) -> str:
    cols = [c for c in table.column_names if c not in ("row_id", "job_key", "seed")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r[c])}</td>" for c in cols) + "</tr>" for r in table.slice(0, max_rows).to_pylist()
    )
    more = f"<p>({table.num_rows - max_rows} more rows in the shards)</p>" if table.num_rows > max_rows else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


_SUMMARY_INTRO = (
    "<h2>Summary statistics</h2>"
    "<p>Per direction type: mean, sd, median and bootstrap 95% CI of the mean; two-sample KS "
    "statistic and p-value against <code>real</code> on the same schedule, SAE and hook. "
    "A row is <i>censored</i> when its summary is no event inside the walk (a max-slope step at "
    "the last valid step, a plateau never left); the <code>*_uncensored</code> columns leave "
    "those rows out. Max-slope steps and plateau lengths are in steps of the walk; plateau "
    "lengths are reported for walks in absolute steps only.</p>"
)


def diagnostics_html(table: pa.Table) -> str:
    """The plateau index and L2 curvature (METHODS §10), first: they say whether the numbers
    below can carry any signal on this model."""
    rows = [r for r in table.to_pylist() if r["section"] == "diagnostics"]
    if not rows:
        return ""
    index = [r for r in rows if r["metric"] == "plateau_index" and r["value"] is not None]
    verdict = ""
    if index:
        worst = min(r["value"] for r in index)
        verdict = (
            "<div class=warn>The plateau index is near 1: walks toward real activations are not flatter than walks "
            "toward N(mu, Sigma) samples, so this model shows no activation plateau here and blowup and plateau "
            "numbers carry little signal.</div>"
            if worst > 0.8
            else "<div class=ok>The plateau index is well below 1: walks toward real activations stay flat longer.</div>"
        )
    body = _table(
        ["metric", "t", "direction", "schedule", "sae", "hook", "value", "n"],
        [[r["metric"], r["x"], r["direction"], r["schedule"], r["sae"], r["hook"], r["value"], r["n"]] for r in rows],
    )
    intro = (
        "<p>Plateau index at t: median over base prompts of KL(real walk) / KL(random walk) from the same base "
        "(relative schedule); L2 curvature: median of L2[20] / (2 L2[10]), 1 for L2 growing linearly from the start.</p>"
    )
    return "<h2>Does this model show plateaus?</h2>" + intro + verdict + body


def completeness_html(comp: Completeness) -> str:
    if comp.ok:
        return f"<h2>Completeness</h2><div class=ok>Complete: {html.escape(comp.summary())}.</div>"
    items = "".join(f"<li>{html.escape(p)}</li>" for p in comp.problems())
    return (
        f"<h2>Completeness</h2><div class=warn><b>Partial data</b> (reduced with --allow-partial): {html.escape(comp.summary())}."
        f"<ul>{items}</ul>The statistics below cover the rows present only.</div>"
    )


def write_html(
    path: Path,
    *,
    sweep_dir: Path,
    table: pa.Table,
    figures: dict[str, Path],
    comp: Completeness,
    configs: dict[str, Any],
    provenance: dict[str, Any],
    reduce_provenance: dict[str, Any],
    study_tables: dict[str, pa.Table] | None = None,
    thresholds: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """``configs`` and provenance must already be sanitized."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>sensdir reduce: {html.escape(sweep_dir.name)}</title>"]
    parts.append(f"<style>{_CSS}</style></head><body>")
    parts.append(f"<h1>sensdir reduce: {html.escape(str(sweep_dir))}</h1>")
    parts.append(f"<p>Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}.</p>")
    parts.append(completeness_html(comp))
    parts.append(diagnostics_html(table))
    parts.append(_SUMMARY_INTRO + summary_html(table) + thresholds_html(thresholds or {}))
    facts = facts_html(table)
    if facts:
        parts.append("<h2>Target facts</h2><p>What the walks' targets are like, per type (mean ± sd over rows).</p>" + facts)
    sections = (
        ("error_pathology", "Error pathology"),
        ("feature_l0", "KL vs length per SAE"),
        ("absorption", "Feature absorption"),
        ("ioi_supervised", "IOI supervised dictionaries"),
        ("sae_quality", "SAE quality"),
    )
    for section, title in sections:
        if any(s == section for s in table.column("section").to_pylist()):
            parts.append(f"<h2>{title}</h2>" + _section_rows(table, section))
    for study, st in sorted((study_tables or {}).items()):
        parts.append(f"<h2>Study: {html.escape(study)}</h2>" + _plain_table(st))
    parts.append("<h2>Figures</h2>")
    parts.extend(_img(p) for p in figures.values())
    parts.append("<h2>Jobs</h2>")
    parts.append(differences_html(configs, "Resolved configs"))
    parts.append("<h2>Provenance</h2>")
    parts.append("<h3>This reduce</h3><pre>" + html.escape(json.dumps(reduce_provenance, indent=2, default=str)) + "</pre>")
    parts.append(differences_html(provenance, "Jobs' provenance"))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
