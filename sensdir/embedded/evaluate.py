"""Re-measure the embedded model's card metrics: ``python -m sensdir.embedded.evaluate``.

Loads the shipped weights (or ``--model-dir``) into ``transformer_lens.HookedTransformer``,
rebuilds the evaluation data from the local standard library and the seeded task generators, and
evaluates on CPU in float32 by default (definitions: :mod:`sensdir.embedded.metrics`).  The
held-out prose is read from *this* interpreter's standard library, so the prose numbers match the
card exactly only on the Python version recorded there (other versions give close values).
``--write`` stores the result in ``metrics.json`` under ``"shipped_weights"``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def measure(
    model_dir: Path | None = None,
    device: str = "cpu",
    tasks: tuple[str, ...] | None = None,
    prose: bool = True,
    max_items: int | None = None,
) -> dict:
    import torch

    from . import data, load_embedded_model, load_raw_tokenizer
    from . import model_dir as _model_dir
    from .corpus import documents, python_tag
    from .metrics import TASKS, evaluate_all

    path = _model_dir(model_dir)
    model = load_embedded_model(device=device, path=path)
    tok = load_raw_tokenizer(path)
    ev = data.eval_data(tok, seed=0)
    if max_items is not None:
        ev = {k: (v[:max_items] if isinstance(v, list) else v) for k, v in ev.items()}
    heldout = data._stream(tok, documents("heldout")) if prose else None

    def logits_fn(tokens: torch.Tensor) -> torch.Tensor:
        return model(tokens, return_type="logits").float()

    t0 = time.time()
    with torch.no_grad():
        res = evaluate_all(logits_fn, ev, heldout, model.cfg.n_ctx, device, tasks=tasks or TASKS, prose=prose)
    res["_meta"] = {
        "device": device,
        "dtype": "float32",
        "python": python_tag(),
        "torch": torch.__version__,
        "seconds": round(time.time() - t0, 1),
        "first_letter_words": ev["first_letter_words"],
    }
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="Re-measure the embedded model's metrics.")
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--write", action="store_true", help="store the result in metrics.json")
    a = ap.parse_args(argv)
    res = measure(a.model_dir, a.device)
    print(json.dumps(res, indent=2))
    if a.write:
        from . import model_dir

        mpath = model_dir(a.model_dir) / "metrics.json"
        m = json.loads(mpath.read_text()) if mpath.exists() else {}
        m["shipped_weights"] = res
        mpath.write_text(json.dumps(m, indent=2) + "\n")
        print(f"updated {mpath}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
