"""The model search's plateau probe and its resumable training (sensdir.embedded.search)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sensdir.embedded import search
from sensdir.embedded.plateau_probe import ProbePrompts, load_gpt, plateau_probe, walk
from sensdir.loading import embedded_model_dir, load_model_dir
from sensdir.metrics.kl import kl_from_logits


def test_probe_walk_is_the_hooked_models_walk():
    """The probe's KL and l2 at t equal a HookedTransformer run with the last position of
    blocks.1.hook_resid_pre replaced, so search numbers measure what sensdir's jobs measure."""
    ht = load_model_dir(embedded_model_dir())
    gpt = load_gpt(embedded_model_dir())
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, ht.cfg.d_vocab, (6, 10), generator=g)
    _, cache = ht.run_with_cache(tokens, names_filter=lambda n: n in ("blocks.1.hook_resid_pre", "blocks.3.hook_resid_post"))
    prefix = cache["blocks.1.hook_resid_pre"]
    target = prefix[torch.tensor([1, 2, 3, 4, 5, 0]), -1]
    clean_logits = ht(tokens)[:, -1]
    got = walk(gpt, prefix, target, 1, (0.2, 0.5))
    for t, (kl, l2) in got.items():
        x_t = prefix[:, -1] + t * (target - prefix[:, -1])

        def patch(act, hook, x_t=x_t):
            act[:, -1] = x_t
            return act

        store: dict = {}

        def grab(act, hook, store=store):
            store["f"] = act[:, -1].clone()

        logits = ht.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_pre", patch), ("blocks.3.hook_resid_post", grab)])[
            :, -1
        ]
        torch.testing.assert_close(kl, kl_from_logits(clean_logits, logits), rtol=1e-3, atol=1e-6)
        l2_ref = (store["f"] - cache["blocks.3.hook_resid_post"][:, -1]).double().norm(dim=-1)
        torch.testing.assert_close(l2, l2_ref, rtol=1e-3, atol=1e-5)
        assert (kl > 0).all()


def _tiny_data(tmp_path):
    """A prepared-data directory in miniature: random token streams with end-of-text separators."""
    d = tmp_path / "data"
    d.mkdir()
    g = np.random.default_rng(0)
    for name, n in (("prose_train", 20_000), ("debian_train", 20_000), ("ioi_train", 5_000), ("first_letter_train", 5_000)):
        s = g.integers(1, 64, n).astype(np.uint16)
        s[::20] = 0
        np.save(d / f"{name}.npy", s)
    (d / "manifest.json").write_text(json.dumps({"vocab_size": 64}))
    return d


def _prompts(g: torch.Generator) -> ProbePrompts:
    return ProbePrompts(*(torch.randint(1, 64, (n, 8), generator=g) for n in (60, 20, 20)))


def _cfg(**kw):
    return search.SearchConfig("tiny", n_layers=2, d_model=32, tokens=4096, n_ctx=16, batch_rows=8, warmup=4, **kw)


def _run(out, data, monkeypatch=None):
    held = {"prose": np.load(data / "prose_train.npy")[:2000]}
    search.search_one(_cfg(), out, data, _prompts(torch.Generator().manual_seed(0)), held)


def test_search_rows_per_milestone_and_rerun_adds_none(tmp_path, monkeypatch):
    monkeypatch.setattr(search.Run, "save_model", lambda self: None)
    data = _tiny_data(tmp_path)
    _run(tmp_path / "out", data)
    rows = [json.loads(x) for x in (tmp_path / "out" / "search.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in rows] == _cfg().milestones()
    assert all(np.isfinite(r["plateau_index_t0.2"]) and r["heldout_prose"] > 0 for r in rows)
    assert rows[-1]["heldout_prose"] < rows[0]["heldout_prose"]  # it learns something
    _run(tmp_path / "out", data)
    assert len((tmp_path / "out" / "search.jsonl").read_text().splitlines()) == len(rows)


def test_search_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """A run killed after a milestone and restarted ends with the weights of an unbroken run."""
    monkeypatch.setattr(search.Run, "save_model", lambda self: None)
    data = _tiny_data(tmp_path)
    _run(tmp_path / "whole", data)
    calls = {"n": 0}
    real_probe = search.plateau_probe

    def dies_at_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_probe(*a, **k)

    monkeypatch.setattr(search, "plateau_probe", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "broken", data)
    monkeypatch.setattr(search, "plateau_probe", real_probe)
    _run(tmp_path / "broken", data)
    a = torch.load(tmp_path / "whole" / "tiny" / "ckpt.pt", weights_only=False)
    b = torch.load(tmp_path / "broken" / "tiny" / "ckpt.pt", weights_only=False)
    assert a["step"] == b["step"] > 0
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    tokens = [json.loads(x)["tokens"] for x in (tmp_path / "broken" / "search.jsonl").read_text().splitlines()]
    assert sorted(tokens) == _cfg().milestones()  # the probe that died is measured on the rerun


def test_probe_flags_targets_far_beyond_the_data():
    """At initialisation the residual's variance is far below cov_eps: random targets lie far
    away and the probe says so (random_to_real_distance), instead of reporting a plateau."""
    torch.manual_seed(0)
    model = search.GPT(_cfg().gpt(64))
    model.init_weights(torch.Generator().manual_seed(0))
    r = plateau_probe(model, _prompts(torch.Generator().manual_seed(1)), 1)
    assert r["random_to_real_distance"] > 3
    r_small_eps = plateau_probe(model, _prompts(torch.Generator().manual_seed(1)), 1, cov_eps=1e-8)
    assert r_small_eps["random_to_real_distance"] < r["random_to_real_distance"] / 3
