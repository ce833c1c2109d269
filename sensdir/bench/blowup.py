"""The whole [GP24] blowup experiment through ``run_job`` on a GPT-2-shaped model: its wall time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from sensdir.bench.cases import GPT2_SHAPE, N_STEPS, SITE, gpt2_shaped_model
from sensdir.engine import clean_site_resid
from sensdir.site import Site


def _write_model(workdir: Path) -> Path:
    """The GPT-2-shaped model (random weights) in the embedded format, with the embedded
    tokenizer (its token ids are valid ids of a 50257-token vocabulary)."""
    import shutil

    from safetensors.torch import save_file

    from sensdir.loading import embedded_model_dir

    mdir = workdir / "gpt2_shaped"
    model = gpt2_shaped_model(torch.device("cpu"), torch.float32)
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "config.json").write_text(json.dumps({**GPT2_SHAPE, "seed": 0}))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith(("mask", "IGNORE"))}
    save_file(state, str(mdir / "model.safetensors"))
    shutil.copytree(embedded_model_dir() / "tokenizer", mdir / "tokenizer", dirs_exist_ok=True)
    return mdir


def _write_sae(workdir: Path) -> Path:
    """A GPT-2-res-jb-shaped SAE (random unit decoder rows) whose biases make each latent fire
    on ~0.1% of real site activations: an L0 of ~30, like gpt2-small-res-jb at layer 1 (a
    random SAE would otherwise fire thousands of latents and make the synthetic directions
    unrealistically slow)."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    sdir = workdir / "sae"
    model = gpt2_shaped_model(torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=768, d_sae=24576, metadata=SAEMetadata(hook_name=SITE)))
    with torch.no_grad():
        W = torch.randn(768, 24576) / 768**0.5
        sae.W_enc.copy_(W)
        sae.W_dec.copy_(W.T / W.T.norm(dim=-1, keepdim=True))
        sae.b_dec.zero_()
        tokens = torch.randint(0, 4096, (256, 10), generator=torch.Generator().manual_seed(1))
        pre = clean_site_resid(model, tokens, Site.parse(SITE, model.cfg.n_layers))[:, -1] @ W  # the last positions are walked
        sae.b_enc.fill_(-float(torch.quantile(pre.flatten(), 1 - 30 / 24576)))
    sae.save_model(sdir)
    return sdir


def blowup_wall_time(device, dtype_name: str, n_prompts: int, workdir: Path) -> dict:
    """The whole [GP24] blowup experiment through run_job on a GPT-2-shaped model with a
    GPT-2-res-jb-shaped SAE (random weights): n_prompts x {real, synth_struct,
    synth_baseline, random} x 100 relative steps."""
    from sensdir.config import (
        DataConfig,
        Dtype,
        ModelConfig,
        ModelSource,
        RunConfig,
        SaeConfig,
        SaeSource,
        SensdirConfig,
        SiteConfig,
    )
    from sensdir.directions import DIRECTIONS
    from sensdir.job import run_job
    from sensdir.schedules.relative import RelativeConfig

    mdir, sdir = _write_model(workdir), _write_sae(workdir)
    times = {}
    for name in ("real", "synth_struct", "synth_baseline", "random"):
        cfg = SensdirConfig(
            model=ModelConfig(source=ModelSource.embedded, path=str(mdir), dtype=Dtype(dtype_name)),
            sae=SaeConfig(source=SaeSource.disk, path=str(sdir)),
            site=SiteConfig(hook=SITE),
            data=DataConfig(n_ctx=10, n_prompts=n_prompts, n_stats=200, n_pool=200),
            direction=DIRECTIONS.get(name).config_cls(),
            schedule=RelativeConfig(n_steps=N_STEPS),
            run=RunConfig(out_dir=str(workdir / "results"), name="bench", device=str(device), progress=False),
        )
        t = time.perf_counter()
        run_job(cfg)
        times[name] = time.perf_counter() - t
        print(f"  blowup experiment: {name} done in {times[name]:.0f} s", flush=True)
    total = sum(times.values())
    return {"n_prompts": n_prompts, "device": str(device), "dtype": dtype_name, "per_direction_s": times, "total_s": total}
