"""The embedded model: gpt.py equivalence with HookedTransformer, and the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sensdir.embedded.gpt import GPT, GPTConfig

ASSETS = Path(__file__).resolve().parents[1] / "sensdir" / "embedded" / "assets" / "model"
ALLOWED_MISSING = {"mask", "IGNORE"}


def _hooked(cfg: GPTConfig):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    return HookedTransformer(HookedTransformerConfig(**cfg.hooked_kwargs()))


def test_gpt_matches_hooked_transformer():
    """Randomly initialised gpt.GPT and HookedTransformer with the same weights agree to
    atol 1e-4 in float32 (logits are O(1) here)."""
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, d_vocab=512, n_ctx=32)
    gpt = GPT(cfg)
    gpt.init_weights(torch.Generator().manual_seed(0), std=0.1)
    with torch.no_grad():  # make biases and LayerNorm parameters non-trivial too
        for name, p in gpt.named_parameters():
            if not name.split(".")[-1].startswith("W_"):
                p.add_(0.1 * torch.randn_like(p))
    gpt.eval()
    ht = _hooked(cfg)
    missing, unexpected = ht.load_state_dict(gpt.state_dict(), strict=False)
    assert not unexpected
    assert {k.split(".")[-1] for k in missing} <= ALLOWED_MISSING, missing
    tokens = torch.randint(0, cfg.d_vocab, (3, cfg.n_ctx), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = gpt(tokens)
        b = ht(tokens)
    assert a.shape == b.shape == (3, cfg.n_ctx, cfg.d_vocab)
    assert a.abs().max() > 0.5
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_state_dict_names_and_shapes_match():
    cfg = GPTConfig()
    ours = {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in _hooked(cfg).state_dict().items() if k.split(".")[-1] not in ALLOWED_MISSING}
    assert ours == theirs


def _card_metrics() -> dict:
    return json.loads((ASSETS / "metrics.json").read_text())


def test_shipped_weights_load_and_solve_ioi():
    """The shipped weights load into HookedTransformer (no training, no network) and answer a
    standard IOI prompt and a first-letter prompt."""
    from sensdir.embedded import load_embedded_model, model_config

    assert (ASSETS / "model.safetensors").stat().st_size < 12_000_000
    model = load_embedded_model()
    assert model.cfg.n_layers == 4 and model.cfg.d_model == 256 and model.cfg.n_heads == 8
    assert model.cfg.d_head == 32 and model.cfg.d_mlp == 1024 and model.cfg.act_fn == "gelu_new"
    assert model_config()["d_vocab"] == model.cfg.d_vocab
    tok = model.tokenizer
    for word in (" Mary", " John", " A", " Z"):
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1
    toks = model.to_tokens("When Mary and John went to the store, John gave the drink to")
    assert toks[0, 0].item() == 0  # <|endoftext|> is prepended as BOS
    with torch.no_grad():
        logits = model(toks)[0, -1]
    assert tok.decode(int(logits.argmax())) == " Mary"
    with torch.no_grad():
        logits = model(model.to_tokens(" cat has the first letter:"))[0, -1]
    assert tok.decode(int(logits.argmax())) == " C"


def test_missing_weights_dir_gives_clear_error(tmp_path):
    from sensdir.embedded import load_embedded_model

    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_embedded_model(path=tmp_path)


def test_gpt_loads_shipped_weights_and_matches():
    """The pure-torch training model computes the same logits from the shipped weights."""
    from safetensors.torch import load_file

    from sensdir.embedded import load_embedded_model

    cfg_json = json.loads((ASSETS / "config.json").read_text())
    gpt = GPT(GPTConfig(**{k: cfg_json[k] for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx")}))
    gpt.load_state_dict({k: v.float() for k, v in load_file(str(ASSETS / "model.safetensors")).items()})
    gpt.eval()
    model = load_embedded_model()
    toks = model.to_tokens("The function returns a new list of the items in the sequence.")
    with torch.no_grad():
        torch.testing.assert_close(gpt(toks), model(toks), atol=1e-3, rtol=0)


@pytest.mark.slow
def test_card_metrics_are_remeasurable():
    """Re-measure on CPU (subsampled tasks, full held-out prose; ~15 s) and compare with the
    numbers the card quotes from metrics.json["shipped_weights"]."""
    import sys

    from sensdir.embedded.evaluate import measure

    card = _card_metrics()["shipped_weights"]
    res = measure(max_items=300)
    if card["_meta"]["python"] == f"py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}":
        assert abs(res["prose_heldout"]["bits_per_char"] - card["prose_heldout"]["bits_per_char"]) < 1e-3
    else:  # another stdlib: a slightly different held-out corpus
        assert abs(res["prose_heldout"]["bits_per_char"] - card["prose_heldout"]["bits_per_char"]) < 0.15
    for key in ("ioi_heldout_pairs", "ioi_heldout_templates", "first_letter_seen"):
        assert abs(res[key]["accuracy"] - card[key]["accuracy"]) < 0.08, key


def test_corpus_splits_are_deterministic_and_disjoint():
    from sensdir.embedded import corpus

    train_ids, held_ids = corpus.document_ids("train"), corpus.document_ids("heldout")
    assert held_ids and len(train_ids) > 20 * len(held_ids)
    assert not set(train_ids) & set(held_ids)
    assert all(corpus.split_of(i) == "heldout" for i in held_ids)
    docs = corpus.documents("heldout")
    assert len(docs) == len(held_ids) and all(isinstance(d, str) and d for d in docs)
    assert all(corpus.EOT not in d for d in docs)
    with pytest.raises(ValueError):
        corpus.documents("test")  # type: ignore[arg-type]


def test_task_generators_respect_holdouts():
    from sensdir.embedded import tasks
    from sensdir.tasks.ioi import HELDOUT_TEMPLATES

    for split in ("train", "heldout_pairs", "heldout_templates"):
        exs = tasks.ioi_eval_set(split, 200, seed=3)
        assert exs == tasks.ioi_eval_set(split, 200, seed=3)  # seeded
        for e in exs:
            assert e.answer == " " + e.io and e.io != e.s
            assert e.prompt.count(e.s) == 2 and e.prompt.count(e.io) == 1
            first = e.prompt.index(e.io) < e.prompt.index(e.s)
            assert e.io_pos == (0 if first else 1) and e.pattern == ("ABB" if first else "BAB")
            assert tasks.is_heldout_pair(e.io, e.s) == (split != "train")
            assert (e.template in HELDOUT_TEMPLATES) == (split == "heldout_templates")
    words = ["cat", "dog", "apple", "zebra", "house", "mouse", "table", "river", "stone", "light"] * 3
    seen, unseen = tasks.split_words(sorted(set(words)))
    for w in unseen:
        assert all(not t.startswith(f" {w} ") for t in tasks.first_letter_train_texts(sorted(set(words))))
    e = tasks.make_first_letter("cat")
    assert (e.prompt, e.answer, e.word, e.letter) == (" cat has the first letter:", " C", "cat", "C")


@pytest.mark.slow
def test_train_cli_smoke(tmp_path):
    """One CPU step of the training script on freshly prepared data (shipped tokenizer)."""
    from sensdir.embedded import MODEL_DIR, train

    data_dir = tmp_path / "data"
    m = train.main(
        [
            "--device",
            "cpu",
            "--data-dir",
            str(data_dir),
            "--tokenizer",
            str(MODEL_DIR / "tokenizer"),
            "--out",
            str(tmp_path / "out"),
            "--tokens",
            "512",
            "--batch-size",
            "4",
            "--eval-every",
            "0",
        ]
    )
    assert m["training"]["steps"] == 1
    for name in ("model.safetensors", "config.json", "metrics.json", "tokenizer/tokenizer.json"):
        assert (tmp_path / "out" / name).exists()
    from sensdir.embedded import load_embedded_model

    load_embedded_model(path=tmp_path / "out")
