"""The lean engine equals the general path for every direction type and every schedule.

Each registered direction type is walked by each schedule that accepts its proposals, through
``run_job`` on the tiny model, twice: ``engine.path=lean`` with the compiled KL kernel (the
default) and ``engine.path=full`` eager (every step reruns the whole sequence from the site,
KL from log-softmax). Tolerances: KL within 1e-5 absolute + 1e-4 relative, L2 within 1e-4
relative (float32 rounding in a different order of operations).
"""

import math

import pyarrow.parquet as pq
import pytest

from helpers import TINY_NAMES, TINY_TEMPLATES, with_
from sensdir.directions import DIRECTIONS
from sensdir.job import run_job
from sensdir.schedules import SCHEDULES

SCHEDULE_CFGS = {"relative": dict(n_steps=9), "absolute": dict(n_steps=9, step_size=0.5), "lengths": dict(preset="short")}


def _direction_cfg(name):
    """Defaults, except where the tiny model needs smaller tasks (its vocabulary has few
    words; its IOI sentences come from the tiny templates of the supervised tests)."""
    if name == "probe":
        from sensdir.directions.probe import ProbeConfig

        return ProbeConfig(letter="S", n_icl_examples=0)
    if name == "supervised":
        from sensdir.directions.supervised import SupervisedConfig

        return SupervisedConfig(attribute="io_pos", custom_templates=TINY_TEMPLATES, names=TINY_NAMES, n_prompts=40)
    if name == "error_correction":  # random pairs: every base has one (the tiny SAE may leave a base without two latents)
        from sensdir.directions.error_correction import ErrorCorrectionConfig

        return ErrorCorrectionConfig(source="random", angles=(0.0, 45.0, 90.0))
    return DIRECTIONS.get(name).config_cls()


def _combos():
    """Every (direction type, schedule) pair where the schedule walks what the type proposes
    (e.g. ``relative`` needs a target or a natural length, not a bare unit direction)."""
    for d in DIRECTIONS.names():
        returns = DIRECTIONS.get(d).impl.returns_for(_direction_cfg(d))
        for s in SCHEDULE_CFGS:
            if returns in SCHEDULES.get(s).impl.accepts:
                yield pytest.param(d, s, id=f"{d}-{s}")


def _curves(cfg):
    table = pq.read_table(run_job(cfg).shard_path).to_pylist()
    return {r["row_id"]: r for r in table}


def _cfg_for(base, direction, schedule, tmp_path, path, compile_):
    dcfg = _direction_cfg(direction)
    scls = SCHEDULES.get(schedule).config_cls
    fields = {k: v for k, v in SCHEDULE_CFGS[schedule].items() if k in scls.__dataclass_fields__}
    return with_(
        base,
        direction=dcfg,
        schedule=scls(**fields),
        engine={"path": path, "compile": compile_, "batch_size": 40},
        # error_correction: one row per (base, pair, angle), run.n_targets = n_pairs * len(angles)
        run={"out_dir": str(tmp_path / path), "n_targets": dcfg.n_rows() if direction == "error_correction" else 1},
    )


def test_every_direction_type_is_walked_by_some_schedule():
    walked = {p.values[0] for p in _combos()}
    assert walked == set(DIRECTIONS.names()) and len(list(_combos())) >= 2 * len(walked)


@pytest.mark.slow
@pytest.mark.parametrize("direction,schedule", list(_combos()))
def test_lean_equals_full_for_every_direction_and_schedule(direction, schedule, tiny_cfg, tmp_path):
    lean = _curves(_cfg_for(tiny_cfg, direction, schedule, tmp_path, "lean", True))
    full = _curves(_cfg_for(tiny_cfg, direction, schedule, tmp_path, "full", False))
    assert lean.keys() == full.keys() and len(lean) > 0
    n_checked = 0
    for rid, a in lean.items():
        b = full[rid]
        kept = [x is not None for x in a["kl"]]  # steps a schedule drops are null in both
        assert kept == [x is not None for x in b["kl"]] and kept[0]
        for col in ("kl", "l2"):
            for x, y in zip(a[col], b[col]):
                if x is not None:
                    assert math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5), (rid, col, a[col], b[col])
        n_checked += sum(kept)
        assert max(x for x in a["kl"] if x is not None) > 0  # the walk moved the output
    assert n_checked >= 2 * len(lean)
