"""W&B as researchers use it: a run per job (opt-in, ``wandb.mode``) in the sweep's group with
live per-step mean curves and end summaries, the reduce's run in the same group, and the
sweep's report built from the runs. Everything here runs offline: the runs are read back from
the offline ``.wandb`` files (W&B's record log of protobuf records)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import with_
from sensdir.artifacts.identity import config_hash, job_dir, job_key
from sensdir.job import run_job

# ----------------------------------------------------------------------------- reading offline runs

_BLOCK, _HEADER = 32768, 7  # W&B's record log: LevelDB's log format after a 7-byte file header
_FULL, _FIRST, _LAST = 1, 2, 4


def _records(path: Path):
    """The protobuf ``Record``s of an offline run's ``run-*.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    buf = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", buf[:_HEADER])
    assert ident == b":W&B" and magic == 0xBEE1, path
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(buf):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # the rest of a block too short for a header is padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", buf[pos : pos + _HEADER])
        data, pos = buf[pos + _HEADER : pos + _HEADER + n], pos + _HEADER + n
        if kind == 0:
            continue
        pending = data if kind in (_FULL, _FIRST) else pending + data
        if kind in (_FULL, _LAST):
            rec = pb.Record()
            rec.ParseFromString(pending)
            yield rec


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _finished_records(run_dir: Path, timeout: float = 60.0) -> list:
    """The records of a finished run: W&B's service may still be writing the file when
    ``run.finish()`` has returned, so wait for the run's exit record."""
    deadline = time.monotonic() + timeout
    while True:
        paths = list(run_dir.glob("run-*.wandb"))
        records = list(_records(paths[0])) if len(paths) == 1 and paths[0].stat().st_size > _HEADER else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_offline_run(run_dir: Path) -> dict:
    """{run: RunRecord, config, history: [dict], summary: dict} of one offline run folder."""
    out: dict = {"run": None, "config": {}, "history": [], "summary": {}}
    for rec in _finished_records(run_dir):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update if i.key != "_wandb"})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
    return out


def offline_runs(root: Path) -> list[Path]:
    return sorted(root.rglob("offline-run-*"))


@pytest.fixture()
def wb_offline(monkeypatch, tmp_path):
    """No W&B server, no key; runs land under ``tmp_path/wandb_dir`` (WANDB_DIR)."""
    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("SENSDIR_WANDB_INIT_TIMEOUT", "60")
    return tmp_path / "wandb_dir"


# ----------------------------------------------------------------------------- job runs


def _walk_cfg(tiny_cfg, **wandb):
    # 40 prompts at engine.batch_size=64 and 11 steps: batches of 16, 16 and 8 rows
    return with_(tiny_cfg, data={"n_prompts": 40}, wandb={"mode": "offline", **wandb})


def test_job_logs_curves_and_summaries_to_its_group(tiny_cfg, wb_offline):
    cfg = _walk_cfg(tiny_cfg, tags=("smoke",))
    res = run_job(cfg)
    rows = pq.read_table(res.shard_path).to_pylist()
    (run_dir,) = offline_runs(wb_offline)
    run = read_offline_run(run_dir)
    assert run["run"].run_group == cfg.run.name == "t" and run["run"].job_type == "real"
    assert list(run["run"].tags) == ["smoke"] and run["run"].project == "sensdir"
    conf = run["config"]
    expected = {"model", "sae_release", "sae_id", "hook", "positions", "direction", "schedule", "n_steps", "seed"}
    assert expected | {"shard", "shards", "n_prompts", "job_key", "config_hash"} <= set(conf)
    assert all(not isinstance(v, dict) for v in conf.values())  # flat
    assert (conf["job_key"], conf["config_hash"]) == (job_key(cfg), config_hash(cfg))
    assert (conf["direction"], conf["n_steps"], conf["hook"], conf["n_prompts"]) == ("real", 11, "blocks.1.hook_resid_pre", 40)
    assert conf["sae_release"] == "disk" and conf["sae_id"] == cfg.sae.path

    # live: one history row per batch, with the running statistics of the rows so far
    batches = [h for h in run["history"] if "rows_done" in h]
    assert [h["rows_done"] for h in batches] == [16, 32, 40] and batches[-1]["fraction_done"] == 1.0
    first = np.array([r["ms_step_kl"] for r in rows[:16]], dtype=float)
    assert batches[0]["stats/ms_step_kl_mean"] == pytest.approx(first.mean())
    live = [h["live/kl_mean_curve_table/path"] for h in batches if "live/kl_mean_curve_table/path" in h]
    assert live  # the live line plot of the mean curve, redrawn as rows come (and after the last batch)
    table = json.loads((run_dir / "files" / live[-1]).read_text())
    live_curve = [row[table["columns"].index("kl_mean")] for row in table["data"]]

    # end: the per-step mean curves against walk_step, as the shard has them
    curve = [h for h in run["history"] if "walk_step" in h]
    assert [h["walk_step"] for h in curve] == list(range(11))
    for metric in ("kl", "l2"):
        mean = np.nanmean(np.array([[np.nan if v is None else v for v in r[metric]] for r in rows], dtype=float), axis=0)
        assert [h[f"curve/{metric}_mean"] for h in curve] == pytest.approx(mean.tolist(), rel=1e-6, abs=1e-9)
        if metric == "kl":
            assert live_curve == pytest.approx(mean.tolist(), rel=1e-6, abs=1e-9)

    # summaries: rows, max-slope step mean/median, censored fraction, wall time
    s = run["summary"]
    assert s["rows"] == len(rows) == 40 and s["wall_time_s"] > 0
    for metric in ("kl", "l2"):
        ms = np.array([r[f"ms_step_{metric}"] for r in rows], dtype=float)
        censored = np.array([r[f"ms_step_{metric}_censored"] for r in rows], dtype=float)
        assert s[f"stats/ms_step_{metric}_mean"] == pytest.approx(ms.mean())
        assert s[f"stats/ms_step_{metric}_median"] == pytest.approx(float(np.median(ms)))
        assert s[f"stats/ms_step_{metric}_censored_fraction"] == pytest.approx(censored.mean())
    assert not any(k.startswith("stats/plateau_len") for k in s)  # relative walks: no plateau lengths
    assert not (Path(cfg.run.out_dir) / cfg.run.name / "wandb").exists()  # WANDB_DIR was set


def test_study_job_logs_its_table(tiny_cfg, wb_offline):
    from sensdir.studies.sae_quality import SaeQualityConfig

    res = run_job(with_(tiny_cfg, study=SaeQualityConfig(n_prompts=8, n_ctx=8, batch=4), wandb={"mode": "offline"}))
    (row,) = pq.read_table(res.shard_path).to_pylist()
    (run_dir,) = offline_runs(wb_offline)
    run = read_offline_run(run_dir)
    assert run["run"].job_type == "sae_quality" and run["config"]["study"] == "sae_quality"
    assert run["config"]["direction"] is None and run["summary"]["rows"] == 1
    path = next(h["study_table/path"] for h in run["history"] if "study_table/path" in h)
    table = json.loads((run_dir / "files" / path).read_text())
    assert table["data"][0][table["columns"].index("fvu")] == pytest.approx(row["fvu"])


def test_runs_go_under_the_sweep_without_wandb_dir(tiny_cfg, wb_offline, monkeypatch):
    key = "fakewandbkey0123456789abcdef0123456789abcd"
    monkeypatch.delenv("WANDB_DIR")
    monkeypatch.setenv("WANDB_API_KEY", key)
    cfg = with_(tiny_cfg, wandb={"mode": "offline", "group": "my-group"}, run={"shards": 2, "shard": 1})
    run_job(cfg)
    (run_dir,) = offline_runs(Path(cfg.run.out_dir))
    assert run_dir.parent == Path(cfg.run.out_dir) / cfg.run.name / "wandb"
    run = read_offline_run(run_dir)
    assert run["run"].run_group == "my-group" and run["config"]["shard"] == 1
    assert run["summary"]["rows"] == 6
    results = Path(cfg.run.out_dir)
    assert [p for p in results.rglob("*") if p.is_file() and key.encode() in p.read_bytes()] == []


def test_disabled_by_default_writes_no_wandb_folder(tiny_cfg, wb_offline, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_DIR")
    monkeypatch.chdir(tmp_path)
    assert str(tiny_cfg.wandb.mode) == "disabled"
    res = run_job(tiny_cfg)
    assert res.n_rows == tiny_cfg.data.n_prompts
    assert [p for p in tmp_path.rglob("*wandb*")] == []


def test_wandb_settings_leave_the_job_identity_alone(tiny_cfg):
    variants = [
        tiny_cfg,
        with_(tiny_cfg, wandb={"mode": "offline"}),
        with_(tiny_cfg, wandb={"mode": "online", "project": "p", "entity": "e", "group": "g", "tags": ("a", "b")}),
    ]
    assert len({config_hash(c) for c in variants}) == 1
    assert len({job_key(c) for c in variants}) == 1 and len({job_dir(c) for c in variants}) == 1


def test_a_finished_shard_is_skipped_whatever_the_wandb_mode(tiny_cfg, wb_offline):
    first = run_job(tiny_cfg)
    again = run_job(with_(tiny_cfg, wandb={"mode": "offline"}))
    assert again.skipped and again.shard_path == first.shard_path
    assert offline_runs(wb_offline) == []  # nothing computed, no run


def test_a_wandb_failure_never_costs_the_shard(tiny_cfg, wb_offline, monkeypatch, caplog):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("no W&B here")

    monkeypatch.setattr(wandb, "init", broken_init)
    res = run_job(with_(tiny_cfg, wandb={"mode": "online"}))
    assert not res.skipped and res.manifest_path.exists() and res.n_rows == tiny_cfg.data.n_prompts
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "W&B" in r.getMessage()]
    assert len(warnings) == 2 and "trying offline" in warnings[0] and "without W&B" in warnings[1]


def test_a_wandb_failure_while_logging_never_costs_the_shard(tiny_cfg, wb_offline, monkeypatch, caplog):
    import wandb

    real_init = wandb.init

    def init_with_broken_log(*args, **kwargs):
        run = real_init(*args, **kwargs)

        def broken_log(*a, **k):
            raise OSError("disk full under wandb/")

        run.log = broken_log
        return run

    monkeypatch.setattr(wandb, "init", init_with_broken_log)
    res = run_job(_walk_cfg(tiny_cfg))
    assert res.manifest_path.exists() and res.n_rows == 40
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "W&B" in r.getMessage()]
    assert len(warnings) == 1 and "disk full" in warnings[0]


def test_bad_wandb_mode_fails_at_startup_naming_the_field(tiny_cfg):
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from sensdir.config import register_configs, to_config
    from sensdir.errors import ConfigError
    from sensdir.validate import validate_walks

    def _compose(*overrides):
        register_configs()
        with initialize_config_dir(
            config_dir=str(Path(__file__).resolve().parent.parent / "sensdir" / "conf"), version_base=None
        ):
            return compose("config", overrides=list(overrides))

    with pytest.raises(ConfigCompositionException) as e:
        _compose("wandb.mode=cloud")
    assert "mode" in str(e.value) + str(e.value.__cause__)
    cfg = to_config(_compose("wandb.mode=offline", "wandb.tags=[a,b]", "wandb.group=g"))
    assert (str(cfg.wandb.mode), tuple(cfg.wandb.tags), cfg.wandb.group) == ("offline", ("a", "b"), "g")
    with pytest.raises(ConfigError, match=r"wandb.mode='cloud' is not valid; valid choices: online, offline, disabled"):
        validate_walks(with_(tiny_cfg, wandb={"mode": "cloud"}))


# ----------------------------------------------------------------------------- the reduce's run


def test_reduce_run_joins_the_jobs_group_with_flat_stable_config(tmp_path, wb_offline):
    from sensdir.reduce import reduce_sweep
    from sensdir.reduce.synthetic import JobSpec, make_sweep

    configs = []
    for name, specs in (("one", [JobSpec("real", 20), JobSpec("random", 20)]), ("two", [JobSpec("real", 10, n_steps=50)])):
        sweep = make_sweep(tmp_path / name, specs)
        res = reduce_sweep(sweep, None, wandb="offline", n_bootstrap=10, progress=False)
        run = read_offline_run(Path(res.wandb["run_dir"]))
        assert run["run"].run_group == "synthetic"  # the jobs' run.name, whatever the folder is called
        assert run["run"].job_type == "reduce"
        assert all(not isinstance(v, dict) for v in run["config"].values())
        configs.append(run["config"])
    assert set(configs[0]) == set(configs[1])  # the same keys for every sweep
    assert not any(job in key for key in configs[0] for job in configs[0]["job_keys"])
    assert configs[0]["directions"] == ["random", "real"] and configs[1]["n_steps"] == [50]


def test_reduce_group_follows_the_jobs_wandb_group(tmp_path):
    from sensdir.reduce.wb_group import SweepTarget, sweep_target

    cfgs = [{"run": {"name": "s"}, "wandb": {"group": "g", "project": "p", "entity": None}}] * 2
    assert sweep_target(cfgs, tmp_path / "x") == SweepTarget("g", "p", None)
    assert sweep_target([{"run": {"name": "s"}}], tmp_path / "x").group == "s"
    assert sweep_target([{"run": {"name": "a"}}, {"run": {"name": "b"}}], tmp_path / "x").group == "x"


# ----------------------------------------------------------------------------- --publish-report


def _record(**kw):
    from sensdir.reduce.wb_report import RunRecord

    return RunRecord(**{"id": "r", "name": "n", "job_type": "real", **kw})


@pytest.mark.filterwarnings("ignore:Pydantic V1 style:DeprecationWarning")  # inside wandb_workspaces
def test_report_is_built_from_the_groups_runs(monkeypatch):
    import wandb_workspaces.reports.v2 as wr

    from sensdir.reduce.wb import TABLE_KEY
    from sensdir.reduce.wb_group import SweepTarget
    from sensdir.reduce.wb_report import report_from_runs

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    target = SweepTarget("quick", "sensdir", "ent")
    runs = [
        _record(
            id="r2", name="reduce-quick", job_type="reduce", summary_keys=("figures/curves", "figures/ms_step", "kl/mean/real")
        ),
        _record(id="j1", job_type="real", summary_keys=("curve/kl_mean", "curve/l2_mean", "curve/grid_mean", "rows")),
        _record(id="j2", job_type="random", summary_keys=("curve/kl_mean", "curve/l2_mean")),
        _record(id="r1", name="reduce-quick-old", job_type="reduce", summary_keys=("figures/old",)),
    ]
    report = report_from_runs(target, "ent", runs)
    assert isinstance(report, wr.Report) and (report.entity, report.project) == ("ent", "sensdir")
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    panels = [p for g in grids for p in g.panels]
    assert any(isinstance(p, wr.WeavePanelSummaryTable) and p.table_name == TABLE_KEY for p in panels)
    media = [k for p in panels if isinstance(p, wr.MediaBrowser) for k in p.media_keys]
    assert media == ["figures/curves", "figures/ms_step"]  # the newest reduce run's figures
    lines = [p for p in panels if isinstance(p, wr.LinePlot)]
    assert [(p.x, p.y) for p in lines] == [("walk_step", ["curve/kl_mean"]), ("walk_step", ["curve/l2_mean"])]
    runsets = [rs for g in grids for rs in g.runsets]
    assert all("Group = 'quick'" in rs.filters for rs in runsets)
    assert runsets[0].query == "reduce-quick" and runsets[-1].groupby == ["JobType"]


@pytest.mark.filterwarnings("ignore:Pydantic V1 style:DeprecationWarning")
def test_report_without_a_reduce_run_says_so():
    import wandb_workspaces.reports.v2 as wr

    from sensdir.reduce.wb_group import SweepTarget
    from sensdir.reduce.wb_report import report_from_runs

    report = report_from_runs(SweepTarget("q", "sensdir", None), "ent", [_record(summary_keys=("curve/kl_mean",))])
    assert any(isinstance(b, wr.CalloutBlock) and "No reduce run" in str(b.text) for b in report.blocks)
    assert not any(isinstance(p, wr.MediaBrowser) for b in report.blocks if isinstance(b, wr.PanelGrid) for p in b.panels)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"WANDB_MODE": "offline"}, "WANDB_MODE=offline"),
        ({}, "no W&B API key: run `wandb login`"),
        ({"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": "closed"}, "does not answer"),
    ],
)
def test_publish_report_fails_clearly_without_the_server(tmp_path, wb_offline, monkeypatch, capsys, env, message):
    import socket

    from sensdir.reduce.__main__ import main as reduce_main
    from sensdir.reduce.synthetic import JobSpec, make_sweep

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()  # nothing listens there
    monkeypatch.setenv("SENSDIR_WANDB_TIMEOUT", "0.5")
    for var, value in env.items():
        monkeypatch.setenv(var, closed if value == "closed" else value)
    sweep = make_sweep(tmp_path / "sweep", [JobSpec("real", 5)])
    assert reduce_main([str(sweep), "--publish-report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sensdir.reduce: error: ") and message in err and "Traceback" not in err
    assert not (sweep / "reduce").exists()  # publishing reduces nothing


def test_running_stats_match_numpy():
    from sensdir.job.wandb_log import RunningStats

    st = RunningStats(["kl"], {"ms_step_kl": "ms_step_kl_censored"})
    st.add(
        {
            "row_id": ["a", "b"],
            "kl": [[0.0, 1.0, None], [0.0, 3.0, 5.0]],
            "ms_step_kl": [1, 2],
            "ms_step_kl_censored": [False, True],
        }
    )
    st.add({"row_id": ["c"], "kl": [[0.0, 2.0, 4.0]], "ms_step_kl": [2], "ms_step_kl_censored": [True]})
    assert st.rows == 3 and st.curve("kl").tolist() == [0.0, 2.0, 4.5]
    sc = st.scalars()
    assert sc["stats/ms_step_kl_mean"] == pytest.approx(5 / 3) and sc["stats/ms_step_kl_median"] == 2.0
    assert sc["stats/ms_step_kl_censored_fraction"] == pytest.approx(2 / 3)
    assert RunningStats(["kl"], {}).curve("kl").tolist() == []
