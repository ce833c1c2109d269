"""One job: (model, SAE, site, data, direction, schedule) -> one Parquet shard.

``run_job`` is what ``python -m sensdir.run`` calls and what tests call with objects. Every
check of the input happens before any compute and before anything is written, so bad input
leaves no partial shard behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sensdir.config import SensdirConfig
from sensdir.data import load_prompts, shard_slice
from sensdir.directions import DIRECTIONS, DirectionContext
from sensdir.engine import WalkEngine, clean_site_resid, walk_metrics_all_positions
from sensdir.errors import ConfigError
from sensdir.loading import check_site, load_model, load_sae, resolve_device
from sensdir.metrics import max_slope_step, plateau_length
from sensdir.provenance import provenance
from sensdir.registry import UnknownNameError
from sensdir.schedules import SCHEDULES
from sensdir.shards import (
    SCHEMA_VERSION,
    build_plain_table,
    build_table,
    is_complete,
    plan_path,
    shard_paths,
    write_json_atomic,
    write_table_atomic,
)
from sensdir.stats import compute_stats, site_activations
from sensdir.studies import STUDIES, StudyContext

log = logging.getLogger("sensdir")

METRICS = ("kl", "l2")
POSITIONS = ("last", "all")
# Settings that change how a job runs, not what it computes: excluded from its identity.
_NOT_IDENTITY = ("out_dir", "progress", "overwrite", "shard", "device")


@dataclass(frozen=True)
class JobResult:
    job_dir: Path
    shard_path: Path
    manifest_path: Path
    n_rows: int
    skipped: bool


def config_dict(cfg: SensdirConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["direction"] = {"_type": type(cfg.direction).__name__, **d["direction"]}
    d["schedule"] = {"_type": type(cfg.schedule).__name__, **d["schedule"]}
    if cfg.study is not None:
        d["study"] = {"_type": type(cfg.study).__name__, **d["study"]}
    return d


def config_hash(cfg: SensdirConfig) -> str:
    d = config_dict(cfg)
    d["run"] = {k: v for k, v in d["run"].items() if k not in _NOT_IDENTITY}
    del d["engine"]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_label(cfg: SensdirConfig) -> str:
    return (cfg.study if cfg.study is not None else cfg.direction).label()


def job_dir(cfg: SensdirConfig) -> Path:
    return Path(cfg.run.out_dir) / cfg.run.name / f"{job_label(cfg).replace(':', '-')}-{config_hash(cfg)[:10]}"


def _validate(cfg: SensdirConfig):
    """Checks that need no model: names, ranges, compatibility. Returns the built schedule."""
    for group, registry, sub in (("direction", DIRECTIONS, cfg.direction), ("schedule", SCHEDULES, cfg.schedule)):
        try:
            entry = registry.get(sub.name)
        except UnknownNameError as e:
            raise ConfigError(str(e)) from None
        if not isinstance(sub, entry.config_cls):
            raise ConfigError(f"{group} {sub.name!r} needs a {entry.config_cls.__name__}, got {type(sub).__name__}")
    try:
        schedule = SCHEDULES.build(cfg.schedule)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    returns = DIRECTIONS.get(cfg.direction.name).impl.returns_for(cfg.direction)
    if returns not in schedule.accepts:
        raise ConfigError(
            f"direction {cfg.direction.name!r} gives a {returns}, which schedule {cfg.schedule.name!r} "
            f"cannot walk; schedules that can: "
            + ", ".join(e.name for e in SCHEDULES.entries() if returns in e.impl.accepts)
        )
    if cfg.site.positions not in POSITIONS:
        raise ConfigError(f"site.positions={cfg.site.positions!r} is not supported; valid choices: {', '.join(POSITIONS)}")
    bad = [m for m in cfg.metric.names if m not in METRICS]
    if bad:
        raise ConfigError(f"unknown metric(s) {bad}; valid choices: {', '.join(METRICS)}")
    run = cfg.run
    if run.shards < 1 or not 0 <= run.shard < run.shards:
        raise ConfigError(f"run.shard must be in 0..run.shards-1, got shard={run.shard} shards={run.shards}")
    if cfg.engine.path not in WalkEngine.PATHS:
        raise ConfigError(f"engine.path={cfg.engine.path!r} is unknown; valid choices: {', '.join(WalkEngine.PATHS)}")
    if run.n_targets < 1 or cfg.engine.batch_size < 1 or cfg.engine.logits_mb <= 0:
        raise ConfigError("run.n_targets, engine.batch_size and engine.logits_mb must be positive")
    return schedule


def _load(cfg: SensdirConfig):
    """Seed once, then the device, model, SAE and site (checked against each other)."""
    torch.manual_seed(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    model = load_model(cfg.model, device)
    sae = load_sae(cfg.sae, device)
    return device, model, sae, check_site(model, sae, cfg.site.hook)


def _skip_if_complete(cfg: SensdirConfig, jdir: Path, chash: str) -> JobResult | None:
    run = cfg.run
    parquet_path, manifest_path = shard_paths(jdir, run.shard, run.shards)
    if run.overwrite or not is_complete(jdir, run.shard, run.shards, chash):
        return None
    n = json.loads(manifest_path.read_text())["n_rows"]
    log.info("skip: %s is complete (%d rows)", parquet_path, n)
    return JobResult(jdir, parquet_path, manifest_path, n, skipped=True)


def _write_plan(jdir: Path, cfg: SensdirConfig, chash: str, row_ids: list[str]) -> None:
    # The plan is written once every check has passed: the reduce compares it with what the
    # shards hold, so a job killed mid-run shows up as missing rows, not as nothing.
    run = cfg.run
    write_json_atomic(
        plan_path(jdir, run.shard, run.shards),
        {"job_key": jdir.name, "config_hash": chash, "shard": run.shard, "shards": run.shards, "n_rows": len(row_ids), "row_ids": row_ids},
    )


def _write_manifest(path: Path, meta: dict, n: int, cfg: SensdirConfig, device, started: str, timings: dict) -> None:
    write_json_atomic(
        path,
        {
            **meta,
            "status": "complete",
            "n_rows": n,
            "shard": cfg.run.shard,
            "shards": cfg.run.shards,
            "parquet": path.name.replace(".manifest.json", ".parquet"),
            "provenance": provenance(),
            "device": str(device),
            "started_at": started,
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "timings_s": timings,
        },
    )


def run_study(cfg: SensdirConfig) -> JobResult:
    """A study (``cfg.study``): one table, written as one shard with plan and manifest."""
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat()
    try:
        entry = STUDIES.get(cfg.study.name)
    except UnknownNameError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(cfg.study, entry.config_cls):
        raise ConfigError(f"study {cfg.study.name!r} needs a {entry.config_cls.__name__}, got {type(cfg.study).__name__}")
    if cfg.run.shards != 1:
        raise ConfigError(f"study {cfg.study.name!r} runs as one job; drop run.shards={cfg.run.shards}")
    jdir, chash = job_dir(cfg), config_hash(cfg)
    done = _skip_if_complete(cfg, jdir, chash)
    if done is not None:
        return done
    device, model, sae, site = _load(cfg)
    ctx = StudyContext(cfg=cfg, model=model, sae=sae, site=site, device=device, seed=cfg.run.seed, progress=cfg.run.progress)
    try:
        study = entry.impl(cfg.study, ctx)
        keys = study.planned_keys()
    except ValueError as e:
        raise ConfigError(f"study {cfg.study.name!r}: {e}") from None
    row_ids = [f"{jdir.name}/{k}" for k in keys]
    _write_plan(jdir, cfg, chash, row_ids)
    t_load = time.perf_counter()
    table = study.run()
    got = list(table["row_key"])
    if sorted(got) != sorted(keys):
        raise RuntimeError(f"study {cfg.study.name!r} returned rows {sorted(set(got) ^ set(keys))[:5]} it did not plan (or missed them)")
    n = len(got)
    columns = {
        "row_id": [f"{jdir.name}/{k}" for k in got],
        "job_key": [jdir.name] * n,
        "study": [cfg.study.label()] * n,
        "seed": [cfg.run.seed] * n,
        **table,
    }
    meta = {"schema_version": SCHEMA_VERSION, "kind": cfg.study.name, "config_hash": chash, "job_key": jdir.name, "seed": cfg.run.seed, "config": config_dict(cfg)}
    parquet_path, manifest_path = shard_paths(jdir, cfg.run.shard, cfg.run.shards)
    write_table_atomic(parquet_path, build_plain_table(columns, meta))
    t_end = time.perf_counter()
    _write_manifest(manifest_path, meta, n, cfg, device, started, {"load": t_load - t0, "study": t_end - t_load, "total": t_end - t0})
    log.info("wrote %d rows (study %s) -> %s", n, cfg.study.label(), parquet_path)
    return JobResult(jdir, parquet_path, manifest_path, n, skipped=False)


def run_job(cfg: SensdirConfig) -> JobResult:
    if cfg.study is not None:
        return run_study(cfg)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat()
    schedule = _validate(cfg)
    run = cfg.run
    jdir = job_dir(cfg)
    chash = config_hash(cfg)
    parquet_path, manifest_path = shard_paths(jdir, run.shard, run.shards)
    done = _skip_if_complete(cfg, jdir, chash)
    if done is not None:
        return done

    device, model, sae, site = _load(cfg)
    prompts = load_prompts(cfg.data, model.tokenizer, run.seed)
    sl = shard_slice(len(prompts.base_BT), run.shard, run.shards)
    base_BT, base_index_B = prompts.base_BT[sl], prompts.base_index_B[sl]
    t_load = time.perf_counter()

    skip_first = cfg.data.prepend_bos
    stats = compute_stats(site_activations(model, prompts.stats_NT, site), sae, cfg.stats, skip_first)
    pool_PD = site_activations(model, prompts.pool_PT, site)[:, -1, :]
    ctx = DirectionContext(sae=sae, stats=stats, pool_PD=pool_PD, device=device, model=model, site=site)
    try:
        direction = DIRECTIONS.build(cfg.direction, ctx)
    except ValueError as e:  # e.g. sae_feature:dead on an SAE without dead latents
        raise ConfigError(f"direction {cfg.direction.name!r}: {e}") from None
    eng = cfg.engine
    engine = WalkEngine(model, site, eng.path, eng.batch_size, eng.logits_mb, eng.compile)
    t_stats = time.perf_counter()

    # One CPU generator, seeded once from the config (and the shard, so shards differ).
    gen = torch.Generator().manual_seed(run.seed * 1_000_003 + run.shard)
    base_BT = base_BT.repeat_interleave(run.n_targets, dim=0)
    base_index_B = base_index_B.repeat_interleave(run.n_targets)
    target_index_B = torch.arange(run.n_targets).repeat(len(base_BT) // run.n_targets)
    jkey = jdir.name
    row_ids = [f"{jkey}/s{run.shard}/p{int(p)}/t{int(t)}" for p, t in zip(base_index_B, target_index_B)]
    _write_plan(jdir, cfg, chash, row_ids)

    cols: dict[str, list] = {k: [] for k in ("kl", "l2", "grid", "valid", "ms_step_kl", "ms_step_l2", "plateau_len", "base_norm")}
    info_cols: dict[str, list] = {}
    # Bases are walked in blocks of a few forward batches, bounding the [B, K, d] walk tensors.
    T = cfg.data.n_ctx if cfg.site.positions == "all" else 1
    block = 4 * max(1, cfg.engine.batch_size // (schedule.n_steps * T))
    bar = tqdm(total=len(base_BT), desc=f"{cfg.direction.label()} walks", unit="walk", disable=not run.progress)
    for start in range(0, len(base_BT), block):
        toks_bT = base_BT[start : start + block].to(device)
        clean_bTD = clean_site_resid(model, toks_bT, site)
        b, T_, D = clean_bTD.shape
        positions = cfg.site.positions == "all"
        # In "all" mode every position is a base with its own proposal and walk.
        base_nD = (clean_bTD.reshape(b * T_, D) if positions else clean_bTD[:, -1, :]).float()
        index_n = base_index_B[start : start + block]
        with torch.inference_mode():
            prop = direction.propose(base_nD, index_n.repeat_interleave(T_) if positions else index_n, gen)
            walk = schedule.walk(base_nD, prop)
        if positions:
            K = walk.acts_BKD.shape[1]
            acts = walk.acts_BKD.reshape(b, T_, K, D).to(clean_bTD.dtype)
            m = walk_metrics_all_positions(model, acts, site, cfg.engine.batch_size, cfg.engine.logits_mb, bar)
            # (choice) a step is kept only where every position's walk has it
            valid = walk.valid_BK.reshape(b, T_, K).all(dim=1)
            grid = walk.grid_BK.reshape(b, T_, K)[:, 0]
        else:
            m = engine.walk_metrics(clean_bTD, walk.acts_BKD, progress=bar)
            valid, grid = walk.valid_BK, walk.grid_BK
        kl = torch.where(valid, m.kl_BK, torch.nan)
        l2 = torch.where(valid, m.l2_BK, torch.nan)
        cols["kl"].append(kl.cpu())
        cols["l2"].append(l2.cpu())
        cols["grid"].append(grid.float().cpu())
        cols["valid"].append(valid.cpu())
        cols["ms_step_kl"].append(max_slope_step(kl, valid, cfg.metric.ms_threshold).cpu())
        cols["ms_step_l2"].append(max_slope_step(l2, valid, cfg.metric.ms_threshold).cpu())
        cols["plateau_len"].append(plateau_length(l2, valid, cfg.metric.plateau_l2).cpu())
        cols["base_norm"].append(base_nD.norm(dim=-1).reshape(b, -1).mean(-1).cpu())
        info = dict(prop.info)
        if prop.natural_length_B is not None:
            info["natural_length"] = prop.natural_length_B
        for key, val in info.items():
            vals = val.tolist() if torch.is_tensor(val) else list(val)
            if positions:  # one list per row, an entry per position
                vals = [vals[i * T_ : (i + 1) * T_] for i in range(b)]
            info_cols.setdefault(key, []).extend(vals)
    bar.close()
    t_walk = time.perf_counter()

    n = len(base_BT)
    valid_NK = torch.cat(cols.pop("valid"))
    to_lists = lambda x_NK: [[None if not ok else float(v) for v, ok in zip(row, vrow)] for row, vrow in zip(x_NK.tolist(), valid_NK.tolist())]  # noqa: E731
    columns = {
        "row_id": row_ids,
        "job_key": [jkey] * n,
        "direction": [cfg.direction.label()] * n,
        "schedule": [cfg.schedule.name] * n,
        "grid_kind": [schedule.grid_kind] * n,
        "shard": [run.shard] * n,
        "prompt_index": base_index_B.tolist(),
        "target_index": target_index_B.tolist(),
        "seed": [run.seed] * n,
        "prompt_tokens": base_BT.tolist(),
        "grid": torch.cat(cols["grid"]).tolist(),
        "kl": to_lists(torch.cat(cols["kl"])),
        "l2": to_lists(torch.cat(cols["l2"])),
        "n_valid_steps": valid_NK.sum(-1).tolist(),
        "ms_step_kl": torch.cat(cols["ms_step_kl"]).tolist(),
        "ms_step_l2": torch.cat(cols["ms_step_l2"]).tolist(),
        "plateau_len": torch.cat(cols["plateau_len"]).tolist(),
        "base_norm": torch.cat(cols["base_norm"]).tolist(),
        **info_cols,
    }
    meta = {"schema_version": SCHEMA_VERSION, "kind": "walk", "config_hash": chash, "job_key": jkey, "seed": run.seed, "config": config_dict(cfg)}
    write_table_atomic(parquet_path, build_table(columns, meta))
    t_end = time.perf_counter()
    timings = {"load": t_load - t0, "stats": t_stats - t_load, "walk": t_walk - t_stats, "write": t_end - t_walk, "total": t_end - t0}
    _write_manifest(manifest_path, meta, n, cfg, device, started, timings)
    log.info("wrote %d rows (%s, %s) -> %s", n, cfg.direction.label(), cfg.schedule.name, parquet_path)
    return JobResult(jdir, parquet_path, manifest_path, n, skipped=False)
