"""Shared fixtures: a tiny model directory and a tiny SAE in the same formats as the
shipped embedded default, so that the production loaders run on them in seconds. Builders
(``make_sae``, ``with_``, ...) live in helpers.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import TINY, make_sae

# Fixture modules: their fixtures (hf_cache, hf_offline, slurm_cluster, ...) are available to
# every test without importing them into test modules.
pytest_plugins = ["hf_fixtures", "slurm_cluster"]


def _tiny_tokenizer(directory: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sensdir.embedded.corpus import documents

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(documents("train")[:300], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    fast.save_pretrained(str(directory))
    return fast


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from safetensors.torch import save_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    d = tmp_path_factory.mktemp("tiny_model")
    tok = _tiny_tokenizer(d / "tokenizer")
    kwargs = {**TINY, "d_vocab": len(tok), "seed": 0}
    (d / "config.json").write_text(json.dumps(kwargs))
    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(**kwargs))
    # larger-than-default weights so that perturbations visibly move the output
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.3)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith(("attn.mask", "attn.IGNORE"))}
    save_file(sd, str(d / "model.safetensors"))
    return d


@pytest.fixture(scope="session")
def tiny_sae_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_sae")
    make_sae(TINY["d_model"], 128, "blocks.1.hook_resid_pre").save_model(d)
    return d


@pytest.fixture()
def tiny_cfg(tiny_model_dir, tiny_sae_dir, tmp_path):
    """A complete job config on the tiny model: small, fast, every field explicit."""
    from sensdir.config import (
        DataConfig,
        EngineConfig,
        MetricConfig,
        ModelConfig,
        RunConfig,
        SaeConfig,
        SensdirConfig,
        SiteConfig,
    )
    from sensdir.directions.real import RealConfig
    from sensdir.schedules.relative import RelativeConfig

    return SensdirConfig(
        model=ModelConfig(source="embedded", path=str(tiny_model_dir)),
        sae=SaeConfig(source="disk", path=str(tiny_sae_dir)),
        site=SiteConfig(hook="blocks.1.hook_resid_pre"),
        data=DataConfig(n_ctx=8, n_prompts=12, n_stats=60, n_pool=20),
        direction=RealConfig(),
        schedule=RelativeConfig(n_steps=11),
        metric=MetricConfig(plateau_l2=1.0),
        run=RunConfig(out_dir=str(tmp_path / "results"), name="t", progress=False),
        engine=EngineConfig(batch_size=64),
    )
