"""The benchmark's bookkeeping (timings themselves are measured by `make bench`, never tested)."""

from types import SimpleNamespace

from sensdir.bench import GPT2_SHAPE, step_flops, targets


def _case(model, n_ctx, speedup, kl=1e-6, l2=1e-7):
    return {"model": model, "n_ctx": n_ctx, "speedup": speedup, "max_rel_diff_kl": kl, "max_rel_diff_l2": l2}


def test_targets_judge_each_case_and_only_the_full_blowup_run():
    out = {
        "cases": [_case("gpt2-shaped", 10, 14.0), _case("gpt2-shaped", 128, 40.5, kl=2e-4), _case("embedded", 10, 15.0)],
        "blowup": {"n_prompts": 1000, "total_s": 599.0},
    }
    met = {t["target"]: t["met"] for t in targets(out)}
    assert met == {
        "gpt2-shaped n_ctx 10: speedup >= 15x": False,
        "gpt2-shaped n_ctx 10: KL and L2 within 1e-4 relative": True,
        "gpt2-shaped n_ctx 128: speedup >= 40x": True,
        "gpt2-shaped n_ctx 128: KL and L2 within 1e-4 relative": False,
        "embedded n_ctx 10: speedup >= 15x": True,
        "embedded n_ctx 10: KL and L2 within 1e-4 relative": True,
        "blowup experiment <= 600 s": True,
    }
    out["blowup"] = {"n_prompts": 20, "total_s": 17.0}  # a smaller run says nothing about the target
    assert not any("blowup" in t["target"] for t in targets(out))


def test_step_flops_of_the_gpt2_shaped_case():
    cfg = SimpleNamespace(**GPT2_SHAPE)
    naive, engine = step_flops(cfg, 10, 1, False), step_flops(cfg, 10, 1, True)
    # 12 layers x 10 positions + 10 unembeddings vs 11 layers x 1 position + 1 unembedding + prefix share
    assert 2.45e9 < naive < 2.50e9 and 2.4e8 < engine < 2.5e8
    assert step_flops(cfg, 128, 1, False) / step_flops(cfg, 128, 1, True) > 40
