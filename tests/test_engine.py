"""The engine (blocks from the site on, last position only) equals the papers' computation
(hook overwrites the site, whole model on the whole sequence). Tolerance: float32,
KL within 1e-5 absolute, final-residual L2 within 1e-4 relative."""

import pytest
import torch

from sensdir.engine import WalkEngine, choose_path, clean_site_resid
from sensdir.engine.reference import naive_readouts, run_from_site
from sensdir.errors import ConfigError
from sensdir.loading import load_model_dir
from sensdir.metrics.kl import KL, kl_from_logits, walk_kl_
from sensdir.metrics.l2 import L2
from sensdir.site import Site, SiteError, final_hook


def curves(model, site, clean, acts, **kw):
    return WalkEngine(model, site, [KL(), L2()], **kw).curves(clean, acts)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model_dir(tiny_model_dir)


@pytest.mark.parametrize(
    "hook", ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
)
@pytest.mark.parametrize("path", ["lean", "kv_cache", "full"])
@pytest.mark.parametrize("T", [7, 1], ids=["T7", "T1-no-prefix"])
def test_walk_metrics_equal_naive_hook_and_full_forward(model, hook, path, T):
    torch.manual_seed(1)
    site = Site.parse(hook, model.cfg.n_layers)
    B, K = 3, 6
    tokens_BT = torch.randint(0, model.cfg.d_vocab, (B, T))
    clean_BTD = clean_site_resid(model, tokens_BT, site)
    target_BD = torch.randn(B, model.cfg.d_model) * 5
    t_K = torch.linspace(0, 1, K)
    acts_BKD = (1 - t_K[None, :, None]) * clean_BTD[:, None, -1] + t_K[None, :, None] * target_BD[:, None]
    # batch_size smaller than B*K: several forward chunks
    # logits_mb this small unembeds one walk at a time
    m = curves(model, site, clean_BTD, acts_BKD, batch_size=2 * K, path=path, logits_mb=0.01)
    for b in range(B):
        logits_KV, final_KD = naive_readouts(model, tokens_BT[b], acts_BKD[b], site)
        kl_K = kl_from_logits(logits_KV[:1].expand_as(logits_KV), logits_KV)
        l2_K = (final_KD - final_KD[:1]).norm(dim=-1)
        torch.testing.assert_close(m["kl"][b], kl_K, atol=1e-5, rtol=0)
        torch.testing.assert_close(m["l2"][b], l2_K, atol=1e-4, rtol=1e-4)
    assert (m["kl"][:, 0] == 0).all() and (m["l2"][:, 0] == 0).all()
    assert (m["kl"][:, -1] > 1e-4).all(), "a 5-sigma target must move the output"


def test_unperturbed_readout_equals_model_logits(model):
    tokens_BT = torch.randint(0, model.cfg.d_vocab, (2, 5))
    site = Site.parse("blocks.1.hook_resid_pre", model.cfg.n_layers)
    logits_NV, _ = run_from_site(model, clean_site_resid(model, tokens_BT, site), site)
    torch.testing.assert_close(logits_NV, model(tokens_BT)[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hook", ["blocks.2.hook_resid_pre", "blocks.1.attn.hook_z", "hook_embed"])
def test_bad_sites_are_refused(hook):
    with pytest.raises(SiteError):
        Site.parse(hook, n_layers=2)


def test_kl_direction_is_clean_first():
    p = torch.tensor([[2.0, 0.0, -1.0]])
    q = torch.tensor([[0.0, 1.0, 0.5]])
    P, Q = p.softmax(-1), q.softmax(-1)
    expected = (P * (P.log() - Q.log())).sum()
    assert torch.allclose(kl_from_logits(p, q), expected.reshape(1))
    assert not torch.allclose(kl_from_logits(q, p), expected.reshape(1))


@pytest.mark.parametrize("compiled", [False, True])
def test_walk_kl_equals_the_definition(compiled):
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 50) * 3
    ref = torch.stack([kl_from_logits(logits[w, :1].expand(6, -1), logits[w]) for w in range(3)])
    got = walk_kl_(logits.clone(), compiled)
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=1e-5)
    assert (got[:, 0] == 0).all()
    # small perturbations: float32 rounding only, against a float64 reference
    small = logits[:, :1] + 1e-3 * torch.randn(3, 6, 50)
    small[:, 0] = logits[:, 0]
    lp = torch.log_softmax(small.double(), -1)
    ref_small = (lp[:, :1].exp() * (lp[:, :1] - lp)).sum(-1)
    torch.testing.assert_close(walk_kl_(small.clone(), compiled).double(), ref_small, atol=2e-6, rtol=0)


def test_compiled_kernel_falls_back_to_eager_once(monkeypatch):
    import sensdir.metrics.kl_compiled as kernels

    calls = []

    def broken_compile(fn, **kw):
        def run(*a):
            calls.append(fn.__name__)
            raise RuntimeError("no C++ compiler")

        return run

    def kernel(x):
        return x * 2

    monkeypatch.setattr(kernels.torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match="torch.compile of kernel failed"):
        assert kernels.maybe_compiled(kernel, True)(torch.ones(2)).tolist() == [2.0, 2.0]
    assert kernels.maybe_compiled(kernel, True)(torch.ones(1)).tolist() == [2.0]  # no second try
    assert calls == ["kernel"] and kernels.maybe_compiled(kernel, False) is kernel


@pytest.mark.parametrize("compiled", [False, True])
def test_kl_falls_back_when_the_cheap_shift_overflows(model, compiled):
    from sensdir.engine.forward import unembed
    from sensdir.metrics import Readout

    torch.manual_seed(0)
    final = torch.randn(2, 4, model.cfg.d_model)
    final[1, 2] *= 1e4
    kl = KL().curve(final, Readout(model, logit_rows=1000, compile=compiled))
    assert torch.isfinite(kl).all()
    logits = unembed(model, final[1])
    torch.testing.assert_close(kl[1], kl_from_logits(logits[:1].expand_as(logits), logits), rtol=1e-5, atol=1e-4)


def test_all_positions_equal_naive_per_position_average(model):
    """Site mode all: every position gets its own walk; KL and L2 are averaged over the
    positions but the last. Reference: a hook overwrites every position, whole model."""
    torch.manual_seed(3)
    site = Site.parse("blocks.1.hook_resid_pre", model.cfg.n_layers)
    B, T, K = 2, 5, 4
    tokens_BT = torch.randint(0, model.cfg.d_vocab, (B, T))
    clean_BTD = clean_site_resid(model, tokens_BT, site)
    t_K = torch.linspace(0, 1, K)[None, None, :, None]
    target_BTD = torch.randn_like(clean_BTD) * 5
    acts_BTKD = (1 - t_K) * clean_BTD[:, :, None] + t_K * target_BTD[:, :, None]
    acts_BKD = acts_BTKD.reshape(B * T, K, -1)  # one walk per (prompt, position)
    m = curves(model, site, clean_BTD, acts_BKD, positions="all", batch_size=K * T, logits_mb=0.01)
    for b in range(B):
        store = {}

        def overwrite(resid, hook):
            return acts_BTKD[b].permute(1, 0, 2).contiguous()  # noqa: B023 - hooks run within this iteration

        def grab(resid, hook):
            store["final"] = resid  # noqa: B023 - hooks run within this iteration

        logits = model.run_with_hooks(tokens_BT[b].expand(K, -1), fwd_hooks=[(site.hook, overwrite), (final_hook(2), grab)])
        kl = torch.stack([kl_from_logits(logits[:1, p].expand(K, -1), logits[:, p]) for p in range(T - 1)], -1).mean(-1)
        l2 = (store["final"][:, :-1] - store["final"][:1, :-1]).norm(dim=-1).mean(-1)
        torch.testing.assert_close(m["kl"][b], kl, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m["l2"][b], l2, atol=1e-4, rtol=1e-4)
    assert (m["kl"][:, 0] == 0).all() and (m["kl"][:, -1] > 0).all()


def test_path_is_chosen_once_for_both_site_modes(model):
    assert choose_path("auto", model.cfg, "last") == "lean"
    assert choose_path("auto", model.cfg, "all") == "full"
    assert choose_path("kv_cache", model.cfg, "last") == "kv_cache"
    with pytest.raises(ConfigError, match="positions=all"):
        choose_path("lean", model.cfg, "all")
    with pytest.raises(ConfigError, match="valid choices"):
        choose_path("fast", model.cfg, "last")
    site = Site.parse("blocks.1.hook_resid_pre", model.cfg.n_layers)
    record = WalkEngine(model, site, [KL()], positions="all").record()
    assert record["path"] == "full" and record["positions"] == "all" and record["dtype"] == "float32"
