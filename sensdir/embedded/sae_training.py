"""One SAE of the embedded family trained with sae_lens's ``SAETrainer`` on an in-memory
activation buffer, shipped in sae_lens's disk format, and evaluated (reconstruction statistics,
CE loss with the site spliced), METHODS §8.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sensdir.embedded.sae_family import D_SAE, MODEL_NAME, SaeSpec, TrainSettings
from sensdir.sae_metrics import ReconstructionStats


def _batches(acts: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled batches; ``acts`` is already shuffled, later epochs re-shuffle."""
    n = acts.shape[0]
    epoch = 0
    order = torch.arange(n)
    while True:
        for i in range(0, n - batch_size + 1, batch_size):
            yield acts[order[i : i + batch_size]]
        epoch += 1
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def _metadata(site: str, spec: SaeSpec, settings: TrainSettings, n_ctx: int):
    from sae_lens.saes.sae import SAEMetadata

    return SAEMetadata(
        model_name=MODEL_NAME,
        hook_name=site,
        hook_head_index=None,
        context_size=n_ctx,
        prepend_bos=False,
        seqpos_slice=[1, None],
        sensdir_name=spec.name,
        sensdir_seed=settings.seed,
        sensdir_loss=spec.loss,
        stored_weight_dtype="float16",
    )


def make_training_sae(spec: SaeSpec, site: str, d_in: int, steps: int, settings, n_ctx):
    from sae_lens import (
        GatedTrainingSAE,
        GatedTrainingSAEConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )

    common: dict[str, Any] = dict(
        d_in=d_in,
        d_sae=D_SAE,
        dtype="float32",
        device=settings.device,
        apply_b_dec_to_input=True,
        normalize_activations="expected_average_only_in",
        metadata=_metadata(site, spec, settings, n_ctx),
    )
    warm = max(1, steps // 20)
    if spec.architecture == "gated" and spec.loss == "paper":
        from sensdir.embedded.gated_paper import PaperGatedTrainingSAE

        # decoder rows start at unit norm (the paper's constraint); W_enc = W_dec^T as in sae_lens
        return PaperGatedTrainingSAE(
            GatedTrainingSAEConfig(**common, l1_coefficient=spec.l1_coefficient, l1_warm_up_steps=warm, decoder_init_norm=1.0)
        )
    if spec.loss != "sae_lens":
        raise ValueError(f"loss {spec.loss!r} is only available for gated SAEs")
    if spec.architecture == "standard":
        return StandardTrainingSAE(StandardTrainingSAEConfig(**common, l1_coefficient=spec.l1_coefficient, l1_warm_up_steps=warm))
    if spec.architecture == "gated":
        return GatedTrainingSAE(GatedTrainingSAEConfig(**common, l1_coefficient=spec.l1_coefficient, l1_warm_up_steps=warm))
    if spec.architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=spec.k))
    raise ValueError(spec.architecture)


def train_one(
    spec: SaeSpec,
    site: str,
    acts: torch.Tensor,
    act_mean: torch.Tensor,
    scale: float,
    settings: TrainSettings,
    n_ctx: int,
    sae_seed: int,
):
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

    steps = settings.train_tokens // settings.batch_size
    torch.manual_seed(sae_seed)
    sae = make_training_sae(spec, site, acts.shape[1], steps, settings, n_ctx)
    with torch.no_grad():
        sae.b_dec.copy_(act_mean * scale)
    tcfg = SAETrainerConfig(
        total_training_samples=steps * settings.batch_size,
        train_batch_size_samples=settings.batch_size,
        lr=settings.lr,
        lr_end=settings.lr,  # SAETrainer asserts lr_end is set; ignored by "constant"
        lr_scheduler_name="constant",
        lr_warm_up_steps=max(1, steps // 50),
        lr_decay_steps=max(1, steps // 5),  # linear decay to 0 over the last 20%
        device=settings.device,
        dead_feature_window=max(10, steps // 8),
        feature_sampling_window=max(10, steps // 4),
        n_checkpoints=0,
        save_final_checkpoint=False,
        n_batches_for_norm_estimate=1,
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=_batches(acts, settings.batch_size, sae_seed))
    # the factor was measured on the whole buffer; preset so fit() does not re-estimate it
    # (it folds it into the weights at the end either way)
    trainer.activation_scaler.scaling_factor = scale
    if spec.loss == "paper":
        from sensdir.embedded.gated_paper import attach

        attach(trainer)  # renormalise the decoder rows after every optimizer step
    trained = trainer.fit()
    return trained


def ship(training_sae, out_dir: Path, device: str = "cpu"):
    """Save the inference SAE with sae_lens ``save_model``: float16 weights, float32 cfg dtype.

    Returns the shipped SAE reloaded as float32 (so metrics describe the shipped weights)."""
    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        inf = SAE.load_from_disk(tmp, dtype="float32")
    inf = inf.to(device="cpu", dtype=torch.float16)
    out_dir.mkdir(parents=True, exist_ok=True)
    _, cfg_path = inf.save_model(out_dir)
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"  # sae_lens's disk loader casts the float16 tensors to this
    cfg_path.write_text(json.dumps(cfg, indent=1, sort_keys=True))
    for f in out_dir.iterdir():
        f.chmod(0o644)
    return SAE.load_from_disk(out_dir, device=device)


@torch.no_grad()
def recon_stats(sae, acts: torch.Tensor, batch: int = 8192) -> ReconstructionStats:
    st = ReconstructionStats(sae.cfg.d_sae)
    for i in range(0, acts.shape[0], batch):
        x = acts[i : i + batch]
        f = sae.encode(x)
        st.update(x, sae.decode(f), f)
    return st


@torch.no_grad()
def ce_with_splice(model, rows: torch.Tensor, site: str, fn=None, batch_rows: int = 32) -> float:
    """Mean next-token CE over predicted positions 1..n_ctx-2 (the loss of predicting token t+1
    from positions t >= 1), with ``fn`` applied to the site activation at positions >= 1."""

    def hook(act, hook):  # noqa: ARG001
        act[:, 1:] = fn(act[:, 1:])
        return act

    hooks = [(site, hook)] if fn is not None else []
    total, count = 0.0, 0
    for i in range(0, rows.shape[0], batch_rows):
        b = rows[i : i + batch_rows].to(model.cfg.device)
        lpt = model.run_with_hooks(b, return_type="loss", loss_per_token=True, fwd_hooks=hooks)
        lpt = lpt[:, 1:].double()
        total += float(lpt.sum())
        count += lpt.numel()
    return total / count


def sae_fn(sae):
    def f(x):
        shape = x.shape
        return sae(x.reshape(-1, shape[-1])).reshape(shape).to(x.dtype)

    return f
