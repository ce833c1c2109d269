"""Configs compose into typed, frozen objects; mistakes fail at composition naming the field."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException

from sensdir.config import SensdirConfig, register_configs, to_config
from sensdir.directions import DIRECTIONS

CONF = str(Path(__file__).resolve().parent.parent / "sensdir" / "conf")


def _compose(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("config", overrides=list(overrides))


def test_default_config_is_typed_and_frozen():
    cfg = to_config(_compose())
    assert isinstance(cfg, SensdirConfig)
    assert cfg.direction.name == "real" and type(cfg.direction).__name__ == "RealConfig"
    assert cfg.model.source == "embedded" and cfg.data.n_ctx == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(DIRECTIONS.names()))
def test_every_registered_direction_is_selectable(name):
    cfg = to_config(_compose(f"direction={name}"))
    assert cfg.direction.name == name
    assert isinstance(cfg.direction, DIRECTIONS.get(name).config_cls)


def test_plugin_field_override_is_typed():
    cfg = to_config(_compose("direction=synth_struct", "direction.anchor_cos=0.3"))
    assert cfg.direction.anchor_cos == 0.3
    with pytest.raises(ConfigCompositionException):
        _compose("direction=synth_struct", "direction.anchor_cos=abc")


@pytest.mark.parametrize(
    "override, field",
    [
        ("direction.anchor_coss=0.3", "anchor_coss"),
        ("model.dtyp=float16", "dtyp"),
        ("run.seeed=1", "seeed"),
    ],
)
def test_misspelt_key_names_the_field(override, field):
    with pytest.raises(ConfigCompositionException) as e:
        _compose(override)
    assert field in str(e.value) + str(e.value.__cause__)


def test_wrong_type_is_refused():
    with pytest.raises(ConfigCompositionException):
        _compose("data.n_prompts=many")


def test_unknown_group_option_lists_the_choices():
    with pytest.raises(MissingConfigException) as e:
        _compose("direction=nope")
    assert "synth_struct" in str(e.value)


def test_gpt2_configs_compose():
    cfg = to_config(_compose("model=gpt2-small", "sae=gpt2-small-res-jb", "data=openwebtext", "metric=gpt2"))
    assert cfg.model.name == "gpt2" and cfg.sae.release == "gpt2-small-res-jb"
    assert cfg.sae.sae_id == "blocks.1.hook_resid_pre" and cfg.site.hook is None  # the SAE's hook


def test_typo_in_a_yaml_file_fails_at_startup(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "typo.yaml").write_text("source: embedded\ndtyp: float16\n")
    res = subprocess.run(
        [sys.executable, "-m", "sensdir.run", "--config-dir", str(tmp_path), "model=typo", f"run.out_dir={tmp_path}/out"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert "dtyp" in res.stderr and "ModelConfig" in res.stderr
    assert not (tmp_path / "out").exists()


PRESETS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_experiment_preset_composes_for_each_swept_value(name):
    """Each preset composes, and so does every value its sweep lists (a typo in a swept
    direction or SAE id would otherwise surface only when that job starts)."""
    base = _compose(f"experiment={name}", "hydra/sweeper=basic")
    cfg = to_config(base)
    assert cfg.experiment == name and cfg.run.name == name
    import yaml

    text = (Path(CONF) / "experiment" / f"{name}.yaml").read_text()
    params = (yaml.safe_load(text).get("hydra") or {}).get("sweeper", {}).get("params", {})
    for key, values in params.items():
        for value in str(values).split(","):
            to_config(_compose(f"experiment={name}", f"{key}={value}"))


def test_gpt2_presets_use_the_papers_settings():
    cfg = to_config(_compose("experiment=gp24_blowup"))
    assert (cfg.model.name, cfg.sae.release, cfg.sae.sae_id) == ("gpt2", "gpt2-small-res-jb", "blocks.1.hook_resid_pre")
    assert (cfg.data.n_ctx, cfg.data.n_prompts, cfg.schedule.n_steps, cfg.metric.plateau_l2) == (10, 1000, 100, 20.0)
    cfg = to_config(_compose("experiment=gp24_plateau"))
    assert (cfg.schedule.name, cfg.schedule.step_size, cfg.direction.name) == ("absolute", 0.5, "plateau")


@pytest.mark.parametrize(
    "override, field",
    [
        ("site.positions=every", "positions"),
        ("engine.path=fast", "path"),
        ("model.source=hub", "source"),
        ("model.dtype=fp8", "dtype"),
    ],
)
def test_fixed_choice_settings_refuse_other_values_at_composition(override, field):
    with pytest.raises(ConfigCompositionException) as e:
        _compose(override)
    text = str(e.value) + str(e.value.__cause__)
    assert field in text and "Invalid value" in text


def test_fixed_choice_settings_built_in_python_are_checked_before_loading(tiny_cfg):
    from helpers import with_
    from sensdir.errors import ConfigError
    from sensdir.validate import validate_walks

    with pytest.raises(ConfigError, match=r"site.positions='every' is not valid; valid choices: last, all"):
        validate_walks(with_(tiny_cfg, site={"positions": "every"}))
    with pytest.raises(ConfigError, match="engine.path=full"):
        validate_walks(with_(tiny_cfg, site={"positions": "all"}, engine={"path": "lean"}))
