"""IOI supervised dictionaries (METHODS §7, [M24]): the definitions on hand-built cases, the
``supervised`` direction's defining property, and the study end to end on the tiny model."""

import itertools
import math
import random

import pyarrow.parquet as pq
import pytest
import torch

from helpers import TINY_NAMES, TINY_TEMPLATES, with_
from sensdir.tasks.ioi import (
    attribute_value,
    counterfactual,
    ioi_source,
    other_value,
    pair_split,
    resolve_source,
    sample_prompts,
)
from sensdir.tasks.ioi_dictionary import MeanCodeDictionary, latent_f1, ld_recovered


def _factorial(d=6, seed=0):
    """Activations a = c0 + e_io[v] + e_s[w] + e_pos[p] over the full factorial design, with
    zero-sum effects, so that the mean codes are exactly c0 and the effects."""
    g = torch.Generator().manual_seed(seed)
    levels = {"io": ["a", "b", "c"], "s": ["w", "x", "y", "z"], "io_pos": ["0", "1"]}
    effects = {}
    for attr, vals in levels.items():
        e = torch.randn(len(vals), d, generator=g, dtype=torch.float64)
        effects[attr] = dict(zip(vals, e - e.mean(0)))
    c0 = torch.randn(d, generator=g, dtype=torch.float64)
    rows = list(itertools.product(*levels.values()))
    labels = {attr: [r[i] for r in rows] for i, attr in enumerate(levels)}
    acts = torch.stack([c0 + sum(effects[attr][v] for attr, v in zip(levels, r)) for r in rows])
    return acts, labels, c0, effects, rows


def test_mean_codes_recover_the_effects_and_reconstruct_exactly():
    acts, labels, c0, effects, _ = _factorial()
    dic = MeanCodeDictionary.fit(acts, labels)
    torch.testing.assert_close(dic.u0_D, c0)
    for attr, eff in effects.items():
        for v, e in eff.items():
            torch.testing.assert_close(dic.code(attr, v), e)
    torch.testing.assert_close(dic.reconstruct(labels), acts)
    assert dic.counts["io"] == {"a": 8, "b": 8, "c": 8}


def test_mean_codes_follow_the_definition_on_unbalanced_data():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(7, 3, generator=g, dtype=torch.float64)
    labels = {"io": ["a", "a", "b", "b", "b", "c", "a"]}
    dic = MeanCodeDictionary.fit(acts, labels)
    u0 = acts.mean(0)
    torch.testing.assert_close(dic.u0_D, u0)
    torch.testing.assert_close(dic.code("io", "b"), (acts[2:5] - u0).mean(0))
    with pytest.raises(ValueError, match="no code for io='z'"):
        dic.code("io", "z")


def test_edit_is_the_counterfactual_activation_in_the_factorial_design():
    acts, labels, _, effects, rows = _factorial()
    dic = MeanCodeDictionary.fit(acts, labels)
    index = {r: i for i, r in enumerate(rows)}
    i = index[("a", "x", "1")]
    edited = dic.edit(acts[i : i + 1], "io", ["a"], ["c"])
    torch.testing.assert_close(edited[0], acts[index[("c", "x", "1")]])
    torch.testing.assert_close(dic.edit_vector("s", "w", "z"), effects["s"]["z"] - effects["s"]["w"])
    same = dic.edit(acts[:2], "io_pos", ["0", "1"], ["0", "1"])
    torch.testing.assert_close(same, acts[:2])


def test_ld_recovered_on_hand_made_numbers():
    assert ld_recovered(3.0, 5.0, 1.0) == pytest.approx(0.5)
    assert ld_recovered(7.0, 5.0, 1.0) == pytest.approx(1.5)  # overshoot counts by magnitude
    assert ld_recovered(-1.0, 5.0, 1.0) == pytest.approx(0.5)
    assert ld_recovered(5.0, 5.0, 1.0) == 1.0 and ld_recovered(1.0, 5.0, 1.0) == 0.0
    assert math.isnan(ld_recovered(2.0, 1.0, 1.0))


def test_latent_f1_on_a_hand_made_case():
    active = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], dtype=torch.bool)
    positive = torch.tensor([True, True, False, False])
    f1, prec, rec = latent_f1(active, positive)
    torch.testing.assert_close(f1, torch.tensor([1.0, 2 * 1 / (3 + 2), 0.0]))
    torch.testing.assert_close(prec, torch.tensor([1.0, 1 / 3, 0.0]))
    torch.testing.assert_close(rec, torch.tensor([1.0, 0.5, 0.0]))


def test_ioi_prompts_patterns_counterfactuals_and_split():
    src = ioi_source("embedded")
    exs = sample_prompts(src, 200, seed=0)
    for e in exs[:50]:
        first = min(e.prompt.index(e.io), e.prompt.index(e.s))
        assert (e.prompt.index(e.io) == first) == (e.io_pos == 0) and e.io != e.s
        assert e.prompt.count(e.s) >= 2 and e.answer == " " + e.io
    rng = random.Random(0)
    e = exs[0]
    for attr in ("io", "s", "io_pos"):
        v = other_value(src, e, attr, rng)
        cf = counterfactual(src, e, attr, v)
        assert attribute_value(cf, attr) == v != attribute_value(e, attr)
        assert all(attribute_value(cf, a) == attribute_value(e, a) for a in ("io", "s", "io_pos") if a != attr)
        assert (cf.template, cf.place, cf.object) == (e.template, e.place, e.object)
    with pytest.raises(ValueError, match="same name"):
        counterfactual(src, e, "io", e.s)
    train, test = pair_split(exs, 0.2, seed=0)
    pairs = lambda idx: {frozenset((exs[i].io, exs[i].s)) for i in idx}  # noqa: E731
    assert sorted(train + test) == list(range(200)) and test and not pairs(train) & pairs(test)
    gsrc = ioi_source("gpt2", custom_templates=TINY_TEMPLATES, names=TINY_NAMES)
    assert gsrc.templates == TINY_TEMPLATES and gsrc.names == TINY_NAMES
    with pytest.raises(ValueError, match="unknown"):
        ioi_source("nope")
    with pytest.raises(ValueError, match="outside"):
        ioi_source("embedded", templates=(99,))


def test_resolve_source_picks_gpt2_templates_for_gpt2():
    class M:
        class cfg:
            model_name = "gpt2"

    assert resolve_source("auto", M) == "gpt2"
    M.cfg.model_name = "sensdir-embedded"
    assert resolve_source("auto", M) == "embedded" and resolve_source("gpt2", M) == "gpt2"


@pytest.fixture(scope="module")
def tiny_parts(tiny_model_dir, tiny_sae_dir):
    from sae_lens import SAE

    from sensdir.loading import check_site, load_model_dir

    model = load_model_dir(tiny_model_dir)
    sae = SAE.load_from_disk(str(tiny_sae_dir), device="cpu")
    return model, sae, check_site(model, sae, "blocks.1.hook_resid_pre")


def _dctx(model, sae, site):
    from sensdir.walk_types import DirectionContext, SiteStats

    d = model.cfg.d_model
    stats = SiteStats(torch.zeros(d), torch.eye(d), torch.eye(d), 1.0, torch.zeros(sae.cfg.d_sae))
    return DirectionContext(sae=sae, stats=stats, pool_PD=torch.zeros(1, d), model=model, site=site)


def test_supervised_direction_walks_exactly_to_the_edit(tiny_parts):
    from sensdir.directions import DIRECTIONS
    from sensdir.directions.supervised import SupervisedConfig
    from sensdir.schedules import SCHEDULES
    from sensdir.schedules.relative import RelativeConfig
    from sensdir.tasks.ioi_dictionary import fit_ioi_dictionary

    model, sae, site = tiny_parts
    cfg = SupervisedConfig(
        attribute="io", from_value="the", to_value="in", custom_templates=TINY_TEMPLATES, names=TINY_NAMES, n_prompts=60
    )
    d = DIRECTIONS.build(cfg, _dctx(model, sae, site))
    assert d.returns == "scaled_direction" and cfg.label() == "supervised:io"
    base = torch.randn(3, model.cfg.d_model)
    prop = d.propose(base, torch.arange(3), torch.Generator().manual_seed(0))
    ref = fit_ioi_dictionary(model, site, ioi_source("embedded", (), TINY_TEMPLATES, TINY_NAMES), 60, 0, ("io",))
    delta = ref.edit_vector("io", "the", "in").float()
    torch.testing.assert_close(prop.unit_BD * prop.natural_length_B[:, None], delta.expand(3, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prop.unit_BD.norm(dim=-1), torch.ones(3))
    walk = SCHEDULES.build(RelativeConfig(n_steps=5)).walk(base, prop)
    torch.testing.assert_close(walk.acts_BKD[:, -1], base + delta, atol=1e-5, rtol=1e-5)
    # drawn pairs: distinct values, recorded per row
    drawn = DIRECTIONS.build(
        SupervisedConfig(attribute="s", custom_templates=TINY_TEMPLATES, names=TINY_NAMES, n_prompts=60), _dctx(model, sae, site)
    )
    p2 = drawn.propose(base, torch.arange(3), torch.Generator().manual_seed(0))
    assert all(f != t for f, t in zip(p2.info["from_value"], p2.info["to_value"]))


def test_supervised_direction_refuses_bad_config(tiny_parts):
    from sensdir.directions import DIRECTIONS
    from sensdir.directions.supervised import SupervisedConfig

    model, sae, site = tiny_parts
    kw = dict(custom_templates=TINY_TEMPLATES, names=TINY_NAMES, n_prompts=20)
    with pytest.raises(ValueError, match="attribute='name'"):
        DIRECTIONS.build(SupervisedConfig(attribute="name", **kw), _dctx(model, sae, site))
    with pytest.raises(ValueError, match="not a value of io"):
        DIRECTIONS.build(SupervisedConfig(from_value="Zed", **kw), _dctx(model, sae, site))
    ctx = _dctx(model, sae, site)
    ctx.model = None
    with pytest.raises(ValueError, match="no model/site"):
        DIRECTIONS.build(SupervisedConfig(**kw), ctx)


def _study_cfg(tiny_cfg, **kw):
    from sensdir.studies.ioi_supervised import IoiSupervisedConfig

    return with_(
        tiny_cfg,
        study=IoiSupervisedConfig(custom_templates=TINY_TEMPLATES, names=TINY_NAMES, n_prompts=80, test_frac=0.3, batch=32, **kw),
    )


def test_ioi_supervised_study_end_to_end_on_the_tiny_model(tiny_cfg, tmp_path):
    from sensdir.job import run_job
    from sensdir.studies.ioi_supervised import IoiSupervised

    cfg = _study_cfg(tiny_cfg, sae_k=2)
    res = run_job(cfg)
    rows = {r["row_key"]: r for r in pq.read_table(res.shard_path).to_pylist()}
    assert {f"ld={m}" for m in ("clean", "mean_ablation", "supervised", "sae")} <= set(rows)
    assert {f"f1=io:{n}" for n in TINY_NAMES} | {"f1=io_pos:0", "f1=io_pos:1"} <= set(rows)
    assert rows["ld=clean"]["ld_recovered"] == 1.0 and rows["ld=mean_ablation"]["ld_recovered"] == 0.0
    assert rows["ld=clean"]["fvu"] == 0.0 and rows["ld=mean_ablation"]["fvu"] >= 1.0 - 1e-9 and rows["ld=sae"]["fvu"] > 0
    assert all(math.isfinite(rows[f"ld={m}"]["ld"]) for m in ("clean", "mean_ablation", "supervised", "sae"))
    for attr in ("io", "s", "io_pos"):
        assert rows[f"edit={attr}/patch"]["agree_patch"] == 1.0
        for m in ("clean", "patch", "supervised", "sae"):
            r = rows[f"edit={attr}/{m}"]
            assert all(0 <= r[c] <= 1 for c in ("agree_cf", "agree_cf_names", "agree_patch")) and r["kl_cf"] >= -1e-6
    for key, r in rows.items():
        if key.startswith("f1="):
            assert 0 <= r["f1"] <= 1 and len(r["latents"]) == 2 and r["latent"] == r["latents"][0]
            assert 0 < r["f1_trivial"] < 1 if r["n"] else r["f1_trivial"] == 0
    assert run_job(cfg).skipped
    tidy, figs = IoiSupervised.summarize([({}, pq.read_table(res.shard_path))], tmp_path / "fig")
    metrics = {(t["metric"], t["statistic"]) for t in tidy}
    assert ("ld_recovered", "supervised") in metrics and ("ld_recovered", "sae") in metrics
    assert ("edit_agree_cf/io", "supervised") in metrics and ("best_f1/s", "mean") in metrics
    assert all(t["section"] == "ioi_supervised" for t in tidy)
    assert figs["ioi_supervised"].is_file() and figs["ioi_supervised"].stat().st_size > 1000


def test_ioi_supervised_reconstruction_of_the_train_prompts_is_their_mean(tiny_cfg):
    """On a single template with names fixed by (io, s), the mean codes of one attribute
    recover that attribute's conditional means (checked through the study's own pieces)."""
    from sensdir.errors import ConfigError
    from sensdir.job import run_job
    from sensdir.loading import check_site, load_model_dir, load_sae
    from sensdir.tasks.ioi_dictionary import PromptRuns

    model = load_model_dir(__import__("pathlib").Path(tiny_cfg.model.path))
    sae = load_sae(tiny_cfg.sae, torch.device("cpu"))
    site = check_site(model, sae, tiny_cfg.site.hook)
    src = ioi_source("embedded", (), TINY_TEMPLATES, TINY_NAMES)
    exs = sample_prompts(src, 40, 0)
    acts = PromptRuns(model, site, [e.prompt for e in exs]).site_last().double()
    dic = MeanCodeDictionary.fit(acts, {"io": [e.io for e in exs]})
    for v in TINY_NAMES:
        sel = [i for i, e in enumerate(exs) if e.io == v]
        torch.testing.assert_close(dic.reconstruct({"io": [v]})[0], acts[sel].mean(0))
    with pytest.raises(ConfigError, match="study.attributes"):
        run_job(_study_cfg(tiny_cfg, attributes=("name",)))


def test_supervised_direction_runs_as_a_walk_job(tiny_cfg):
    from sensdir.directions.supervised import SupervisedConfig
    from sensdir.job import run_job

    cfg = with_(
        tiny_cfg,
        direction=SupervisedConfig(attribute="io_pos", custom_templates=TINY_TEMPLATES, names=TINY_NAMES, n_prompts=40),
        data={"n_prompts": 4},
    )
    res = run_job(cfg)
    rows = pq.read_table(res.shard_path).to_pylist()
    assert len(rows) == 4 and res.job_dir.name.startswith("supervised-io_pos-")
    assert {(r["from_value"], r["to_value"]) for r in rows} <= {("0", "1"), ("1", "0")}
    assert all(r["natural_length"] == pytest.approx(r["edit_norm"], rel=1e-5) and r["edit_norm"] > 0 for r in rows)


def test_presets_compose():
    from hydra import compose, initialize_config_dir

    from sensdir.config import register_configs, to_config
    from sensdir.studies.ioi_supervised import IoiSupervisedConfig

    register_configs()
    conf = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "sensdir" / "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        emb = to_config(compose("config", overrides=["experiment=ioi_supervised"]))
        gpt = to_config(compose("config", overrides=["experiment=m24_ioi_supervised"]))
    assert isinstance(emb.study, IoiSupervisedConfig) and emb.study.prompts == "embedded" and emb.model.source == "embedded"
    assert isinstance(gpt.study, IoiSupervisedConfig) and gpt.study.prompts == "gpt2"
    assert gpt.model.name == "gpt2" and gpt.sae.release == "gpt2-small-res-jb" and gpt.sae.sae_id == "blocks.9.hook_resid_pre"
