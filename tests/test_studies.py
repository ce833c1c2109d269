"""Studies run through the same job -> shard path as walks."""

import pyarrow.parquet as pq
import pytest

from helpers import with_
from sensdir.errors import ConfigError
from sensdir.job import run_job
from sensdir.studies import STUDIES
from sensdir.studies.sae_quality import SaeQualityConfig


def test_sae_quality_study_writes_one_row_with_the_metrics(tiny_cfg):
    cfg = with_(tiny_cfg, study=SaeQualityConfig(n_prompts=8, n_ctx=8, batch=4))
    res = run_job(cfg)
    (row,) = pq.read_table(res.shard_path).to_pylist()
    assert row["row_id"] == f"{res.job_dir.name}/sae" and row["study"] == "sae_quality"
    assert row["n_tokens"] == 8 * 8
    assert 0 <= row["l0"] <= 128 and row["fvu"] > 0 and row["gamma"] > 0
    assert row["ce_zero"] != row["ce_clean"]
    assert row["ce_loss_recovered"] == pytest.approx((row["ce_zero"] - row["ce_recon"]) / (row["ce_zero"] - row["ce_clean"]))
    assert run_job(cfg).skipped
    import json

    assert json.loads(res.manifest_path.read_text())["kind"] == "sae_quality"


def test_unknown_study_is_refused(tiny_cfg):
    from sensdir.studies.base import StudyConfig

    with pytest.raises(ConfigError, match="valid choices: .*sae_quality"):
        run_job(with_(tiny_cfg, study=StudyConfig(name="nope")))
    assert "sae_quality" in STUDIES.names()


def test_reduce_includes_study_tables_beside_walks(tiny_cfg, tmp_path):
    from sensdir.reduce import reduce_sweep
    from sensdir.reduce.stats import lookup

    run_job(tiny_cfg)
    run_job(with_(tiny_cfg, study=SaeQualityConfig(n_prompts=8, n_ctx=8, batch=4)))
    res = reduce_sweep(
        f"{tiny_cfg.run.out_dir}/{tiny_cfg.run.name}", tmp_path / "reduce", wandb="disabled", n_bootstrap=50, progress=False
    )
    assert res.completeness.ok
    import pyarrow.parquet as pq

    table = pq.read_table(res.table_parquet)
    (fvu,) = lookup(table, section="sae_quality", statistic="fvu")
    assert fvu["value"] > 0
    assert lookup(table, section="summary", direction="real", metric="ms_step_kl", statistic="mean")
    html = res.html.read_text()
    assert "Study: sae_quality" in html and "ce_loss_recovered" in html
