"""Schema version 2: every walk shard of a sweep has the same columns, so pandas, polars and
DuckDB read a sweep mixing direction types whole with no options; the job's model, SAE, hook,
positions and schedule settings are columns; version-1 shards still read through open_sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import reseal, with_
from sensdir.artifacts.schema import CONTEXT_FIELDS, ID_FIELDS, SCHEMA_VERSION, build_walk_table, open_sweep
from sensdir.directions.base import declared_info_columns
from sensdir.directions.random import RandomConfig
from sensdir.directions.sae_error import SaeErrorConfig
from sensdir.directions.synth_struct import SynthStructConfig
from sensdir.job import run_job
from sensdir.metrics.kl import KL
from sensdir.metrics.l2 import L2
from sensdir.schedules.absolute import AbsoluteConfig

# Facts only some types produce: a reader that takes the first file's schema loses them.
TYPE_FACTS = ["source_index", "anchor_cos", "anchor_latent", "base_l0", "target_l0", "top_latent", "error_norm", "natural_length"]


@pytest.fixture
def mixed_sweep(tiny_cfg) -> Path:
    """real (relative), random, synth_struct and sae_error (absolute): four jobs, four types."""
    run_job(tiny_cfg)
    run_job(with_(tiny_cfg, direction=RandomConfig()))
    run_job(with_(tiny_cfg, direction=SynthStructConfig()))
    run_job(with_(tiny_cfg, direction=SaeErrorConfig(), schedule=AbsoluteConfig(n_steps=11, step_size=0.5)))
    return Path(tiny_cfg.run.out_dir) / tiny_cfg.run.name


def _glob(sweep: Path) -> str:
    return str(sweep / "*" / "shard-*.parquet")


def test_every_shard_of_a_mixed_sweep_has_the_same_schema(mixed_sweep):
    schemas = [pq.read_schema(p) for p in sorted(mixed_sweep.glob("*/shard-*.parquet"))]
    assert len(schemas) == 4
    assert all(s.equals(schemas[0], check_metadata=False) for s in schemas)
    names = schemas[0].names
    assert set(TYPE_FACTS) | {f.name for f in CONTEXT_FIELDS} <= set(names)
    assert {json.loads(s.metadata[b"sensdir"])["schema_version"] for s in schemas} == {SCHEMA_VERSION} == {2}


def test_pandas_reads_the_mixed_sweep_whole(mixed_sweep):
    import pandas as pd

    df = open_sweep(mixed_sweep).to_table().to_pandas()  # the README's snippet
    assert set(TYPE_FACTS) <= set(df.columns)
    assert df.groupby("direction")["source_index"].count().to_dict() == {
        "random": 0,
        "real": 12,
        "sae_error": 0,
        "synth_struct": 0,
    }
    assert df.loc[df.direction == "synth_struct", "anchor_cos"].notna().all()
    assert df.loc[df.direction == "sae_error", "natural_length"].notna().all()
    files = sorted(mixed_sweep.glob("*/shard-*.parquet"))
    whole = pd.concat([pd.read_parquet(f) for f in files])
    assert list(whole.columns) == list(df.columns) and len(whole) == len(df) == 48


def test_polars_scan_parquet_reads_the_glob_whole(mixed_sweep):
    pl = pytest.importorskip("polars")

    df = pl.scan_parquet(_glob(mixed_sweep)).collect()
    assert df.height == 48
    assert set(TYPE_FACTS) <= set(df.columns)
    by = df.group_by("direction").agg(pl.col("anchor_cos").is_not_null().sum()).sort("direction")
    assert by["anchor_cos"].to_list() == [0, 0, 0, 12]


def test_duckdb_read_parquet_reads_the_glob_whole(mixed_sweep):
    duckdb = pytest.importorskip("duckdb")

    con = duckdb.connect()
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{_glob(mixed_sweep)}')").fetchall()]
    assert set(TYPE_FACTS) <= set(cols)
    rows = con.execute(
        f"SELECT direction, count(top_latent), count(error_norm), min(schedule_step_size) "
        f"FROM read_parquet('{_glob(mixed_sweep)}') GROUP BY direction ORDER BY direction"
    ).fetchall()
    assert rows == [("random", 0, 0, None), ("real", 0, 0, None), ("sae_error", 0, 12, 0.5), ("synth_struct", 12, 0, None)]


def test_context_columns_say_what_each_job_ran_on(mixed_sweep, tiny_cfg):
    t = open_sweep(mixed_sweep).to_table().to_pandas()
    assert set(t["model"]) == {"embedded"}
    assert set(t["sae_release"]) == {"disk"} and set(t["sae_id"]) == {tiny_cfg.sae.path}
    assert set(t["hook"]) == {"blocks.1.hook_resid_pre"} and set(t["positions"]) == {"last"}
    assert set(t["schedule_n_steps"]) == {11}
    assert t.groupby("schedule")["schedule_step_size"].max().fillna(-1).to_dict() == {"absolute": 0.5, "relative": -1}
    assert t["ms_step_kl_censored"].dtype == bool


def test_an_undeclared_direction_fact_is_refused_naming_it():
    n = 2
    cols = {f.name: [None] * n for f in ID_FIELDS} | {"my_new_fact": [1.0, 2.0]}
    with pytest.raises(ValueError, match="my_new_fact.*not declared.*info_columns"):
        build_walk_table(cols, KL.fields(), declared_info_columns(), {})


def test_conflicting_declarations_are_refused():
    with pytest.raises(ValueError, match="natural_length.*float64.*int64"):
        build_walk_table({}, [], {"natural_length": "int64"}, {})


def _downgrade_to_v1(parquet: Path) -> None:
    """Rewrite a shard as version 1 wrote it: no context columns, only its own type's facts
    (types inferred), schema_version 1."""
    t = pq.read_table(parquet)
    meta = json.loads(t.schema.metadata[b"sensdir"])
    keep = [c for c in t.column_names if c not in {f.name for f in CONTEXT_FIELDS} | {"info_by_position"}]
    fixed = {f.name for f in ID_FIELDS} | {f.name for m in (KL, L2) for f in m.fields()}
    keep = [c for c in keep if c in fixed or t.column(c).null_count < t.num_rows]
    cols = {c: t.column(c).combine_chunks() if c in fixed else pa.array(t.column(c).to_pylist()) for c in keep}
    meta["schema_version"] = 1
    schema = pa.schema([pa.field(c, a.type) for c, a in cols.items()], metadata={b"sensdir": json.dumps(meta).encode()})
    pq.write_table(pa.Table.from_arrays(list(cols.values()), schema=schema), parquet)
    reseal(parquet)


def test_version_1_shards_still_read_beside_version_2(mixed_sweep, tmp_path):
    from sensdir.reduce import reduce_sweep

    real = next(mixed_sweep.glob("real-*/shard-*.parquet"))
    _downgrade_to_v1(real)
    assert "model" not in pq.read_schema(real).names
    df = open_sweep(mixed_sweep).to_table().to_pandas()
    assert len(df) == 48 and set(TYPE_FACTS) <= set(df.columns)
    v1 = df[df.direction == "real"]
    assert v1["model"].isna().all() and v1["source_index"].notna().all()
    assert df.loc[df.direction != "real", "model"].notna().all()
    out = reduce_sweep(mixed_sweep, tmp_path / "reduce", wandb="disabled", n_bootstrap=20, progress=False)
    stats = pq.read_table(out.table_parquet).to_pandas()
    assert {"real", "random", "synth_struct", "sae_error"} <= set(stats["direction"].dropna())


def test_all_positions_facts_keep_every_position(tiny_cfg):
    res = run_job(with_(tiny_cfg, site={"positions": "all"}))
    rows = pq.read_table(res.shard_path).to_pylist()
    for r in rows:
        per = json.loads(r["info_by_position"])
        assert len(per["source_index"]) == tiny_cfg.data.n_ctx
        assert r["source_index"] == per["source_index"][-1] and r["positions"] == "all"
    assert pq.read_schema(res.shard_path).field("source_index").type == pa.int64()
