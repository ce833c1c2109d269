"""Local stand-ins for the Hugging Face hub: a temporary HF cache holding a tiny
GPT-2-architecture model under the repo id ``gpt2``, SAEs under the repos that sae_lens's
``pretrained_saes.yaml`` maps the GPT-2 releases to, and a local Parquet file of generated
OpenWebText-style documents.

With ``HF_HOME=<root>`` and ``HF_HUB_OFFLINE=1`` the unchanged production code loads them:

* ``HookedTransformer.from_pretrained("gpt2")`` reads ``config.json`` through
  ``AutoConfig`` (so the tiny dimensions are used; ``n_ctx`` must be in the file, TL reads
  ``hf_config.n_ctx``), the weights through ``AutoModelForCausalLM`` and the tokenizer
  through ``AutoTokenizer``, all from ``hub/models--gpt2/snapshots/<rev>/`` found via
  ``refs/main``.
* ``SAE.from_pretrained(release, sae_id)`` maps (release, sae_id) to (repo_id, path) with
  ``pretrained_saes.yaml`` and reads ``<path>/cfg.json``, ``<path>/sae_weights.safetensors``
  (and ``<path>/sparsity.safetensors`` when present) from
  ``hub/models--<org>--<name>/snapshots/<rev>/``.

Files are plain files in the snapshot directory (the hub cache would symlink them to
``blobs/``; offline resolution only needs the snapshot path).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers import make_sae

REVISION = "0" * 39 + "1"  # any 40-hex string; refs/main points at it

# GPT-2 small's depth (so every GPT-2 hook name is a valid site) at a tiny width.
GPT2_TINY = dict(n_layer=12, n_embd=64, n_head=4, n_positions=64)
D_SAE = 128

# (release, sae_id) pairs the GPT-2 presets use: Bloom's residual SAEs at layers 1 and 6
# ([GP24]) and the end-to-end SAEs of Braun et al. at layer 6 ([LH24]).
JB_SAES = [("gpt2-small-res-jb", "blocks.1.hook_resid_pre"), ("gpt2-small-res-jb", "blocks.6.hook_resid_pre")]
AJT_RELEASES = [
    "gpt2-small-res_sll-ajt",
    "gpt2-small-res_sle-ajt",
    "gpt2-small-res_slefr-ajt",
    "gpt2-small-res_scl-ajt",
    "gpt2-small-res_sce-ajt",
    "gpt2-small-res_scefr-ajt",
]
# layer 6 is the one the presets use; METHODS §9 lists layers 2, 6 and 10 for each release
AJT_SAES = [(r, f"blocks.{layer}.hook_resid_pre") for r in AJT_RELEASES for layer in (2, 6, 10)]
PRESET_SAES = JB_SAES + AJT_SAES


# ---------------------------------------------------------------------------- text

_SUBJECTS = [
    "The city council",
    "A local reporter",
    "The new policy",
    "Our research team",
    "The company",
    "Many residents",
    "The government",
    "A spokesperson",
    "The study",
    "Several experts",
    "The committee",
    "Local businesses",
    "The report",
    "Officials",
    "The school board",
]
_VERBS = [
    "announced",
    "questioned",
    "supported",
    "rejected",
    "reviewed",
    "described",
    "welcomed",
    "criticized",
    "delayed",
    "approved",
    "investigated",
    "explained",
    "confirmed",
    "proposed",
]
_OBJECTS = [
    "a plan to expand public transport",
    "the budget for next year",
    "changes to the tax code",
    "a report on housing prices",
    "the results of the election",
    "new rules for online privacy",
    "a deal with its largest supplier",
    "the closure of two hospitals",
    "an increase in wages",
    "the findings of a long investigation",
    "a proposal to build a new bridge",
    "the decision to cut funding",
    "plans for a music festival",
    "the latest climate data",
]
_TAILS = [
    "on Monday",
    "last week",
    "after months of debate",
    "in a statement",
    "earlier this year",
    "according to people familiar with the matter",
    "despite strong objections",
    "without comment",
    "at a press conference",
    "in an interview",
]


def documents(n: int, seed: int = 0) -> list[str]:
    """``n`` generated news-style documents of two to six sentences (no third-party text)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sents = [
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
            for _ in range(rng.randint(2, 6))
        ]
        docs.append(" ".join(sents))
    return docs


def write_parquet(path: Path, n: int = 400, seed: int = 0) -> Path:
    """A Parquet file with a ``text`` column, as OpenWebText's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": documents(n, seed)}), str(path))
    return path


# ---------------------------------------------------------------------------- cache layout


def repo_dir(hf_home: Path, repo_id: str, kind: str = "models") -> Path:
    return Path(hf_home) / "hub" / f"{kind}--{repo_id.replace('/', '--')}"


def snapshot_dir(hf_home: Path, repo_id: str) -> Path:
    """Create ``models--<repo>/refs/main`` -> REVISION and return the snapshot directory."""
    repo = repo_dir(hf_home, repo_id)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snap = repo / "snapshots" / REVISION
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def save_tokenizer(directory: Path):
    """A tiny byte-level BPE (GPT-2's scheme) trained on generated text, saved with
    ``save_pretrained`` as a GPT-2 tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(documents(300, seed=1), trainer)
    fast = GPT2TokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    fast.save_pretrained(str(directory))
    return fast


def save_gpt2(directory: Path, vocab_size: int, eos_id: int, seed: int = 0) -> None:
    """A GPT-2-architecture model of GPT2_TINY's size, saved by ``transformers``. Weights
    are wider than GPT-2's init so that perturbations visibly move the output."""
    from transformers import GPT2Config, GPT2LMHeadModel

    # n_ctx is not a GPT2Config field in transformers 5, but transformer_lens reads it
    config = GPT2Config(
        vocab_size=vocab_size, n_ctx=GPT2_TINY["n_positions"], bos_token_id=eos_id, eos_token_id=eos_id, **GPT2_TINY
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.2)
    model.save_pretrained(str(directory))


def save_sae(directory: Path, d_in: int, hook: str, d_sae: int = D_SAE, seed: int = 0) -> None:
    """A standard ReLU SAE reading ``hook`` (helpers.make_sae), saved with sae_lens's ``save_model``."""
    sae = make_sae(d_in, d_sae, hook, seed=seed, b_enc=-0.3, model_name="gpt2-small")
    directory.mkdir(parents=True, exist_ok=True)
    sae.save_model(directory)


def sae_location(release: str, sae_id: str) -> tuple[str, str]:
    """(repo_id, folder) that sae_lens maps (release, sae_id) to."""
    from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

    return get_repo_id_and_folder_name(release, sae_id)


@dataclass(frozen=True)
class HfCache:
    home: Path  # HF_HOME
    parquet: Path  # local OpenWebText-style Parquet file
    d_model: int
    unplaced: dict  # (release, sae_id) -> why no fixture could be placed

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a subprocess that must see only this cache, offline."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
        env.update(
            HF_HOME=str(self.home),
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            TOKENIZERS_PARALLELISM="false",
            **extra,
        )
        return env


def build_hf_cache(root: Path) -> HfCache:
    root = Path(root)
    home = root / "hf_home"
    snap = snapshot_dir(home, "gpt2")
    tok = save_tokenizer(snap)
    save_gpt2(snap, vocab_size=len(tok), eos_id=tok.eos_token_id)
    d_model = GPT2_TINY["n_embd"]
    unplaced = {}
    for i, (release, sae_id) in enumerate(PRESET_SAES):
        try:
            repo_id, folder = sae_location(release, sae_id)
        except Exception as e:  # noqa: BLE001 - a malformed registry entry is reported, not fatal
            unplaced[(release, sae_id)] = f"{type(e).__name__}: {e}"
            continue
        save_sae(snapshot_dir(home, repo_id) / folder, d_model, sae_id, seed=i)
    parquet = write_parquet(root / "owt" / "train-00000.parquet")
    return HfCache(home=home, parquet=parquet, d_model=d_model, unplaced=unplaced)


@pytest.fixture(scope="session")
def hf_cache(tmp_path_factory) -> HfCache:
    """A filled, offline Hugging Face cache (see the module docstring)."""
    return build_hf_cache(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture()
def empty_hf_cache(tmp_path) -> HfCache:
    """An empty HF cache and a Parquet path that does not exist."""
    (tmp_path / "hf_home").mkdir()
    return HfCache(home=tmp_path / "hf_home", parquet=tmp_path / "none.parquet", d_model=0, unplaced={})


@pytest.fixture()
def hf_offline(hf_cache, monkeypatch) -> HfCache:
    """In this process: huggingface_hub reads the fixture cache, offline. huggingface_hub
    reads HF_HOME / HF_HUB_OFFLINE into ``huggingface_hub.constants`` at import, and
    ``hf_hub_download`` reads those constants at call time, so they are patched too
    (transformers and datasets keep copies of their own: use ``HfCache.env`` and a
    subprocess for those)."""
    from huggingface_hub import constants

    for k in [k for k in os.environ if k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))]:
        monkeypatch.delenv(k)
    for k, v in hf_cache.env().items():
        if k.startswith("HF_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_cache.home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_cache.home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hf_cache
