"""``sensdir-prefetch [--check | --dry-run] [-m] key=value ...``: fill the local caches with
everything the jobs of these overrides load, where the Hugging Face hub is reachable (a login
node), so that they run on compute nodes without internet (``HF_HUB_OFFLINE=1``).

The overrides are a run's own: every job the run (or its multirun: an experiment's sweep and
comma-separated values are always expanded, ``-m`` or not) would start is composed, and for
them, once each: the model's config, weights and tokenizer and every SAE into the Hugging Face
cache (``$HF_HOME/hub``), and the first rows of each streamed dataset that the jobs read, in
their order, as Parquet (``sensdir.data_cache``: ``$HF_HOME/sensdir/datasets``). Then one line
per resource: kind, status (found, fetched, missing, local, failed), size, name and path.

``--check`` fetches nothing and fails (exit 2) with one error naming every missing resource,
as an offline run would; ``--dry-run`` lists what is there and what would be fetched.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensdir.config import SensdirConfig
from sensdir.errors import ConfigError, MissingResourceError, SensdirError
from sensdir.resources import BIN_PATTERNS, CONFIG_FILES, TOKENIZER_FILES, WEIGHT_PATTERNS, Found, Resource


def job_configs(overrides: list[str]) -> list[SensdirConfig]:
    """Every job's config, as ``python -m sensdir.run -m <overrides>`` composes them."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf import open_dict

    from sensdir.config import register_configs
    from sensdir.hydra_hooks import compose_config, job_overrides, register_resolvers

    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("sensdir.conf", version_base=None):
            gh = GlobalHydra.instance()
            assert gh.hydra is not None
            sweep = gh.hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False)
            cfgs = []
            for job in job_overrides(sweep) or [list(sweep.hydra.overrides.task)]:
                job_cfg = gh.config_loader().load_sweep_config(sweep, list(job))
                with open_dict(job_cfg):
                    del job_cfg["hydra"]
                cfgs.append(compose_config(job_cfg))
    except HydraException as e:
        raise ConfigError(f"cannot compose the jobs of {' '.join(overrides) or '(no overrides)'}: {e}") from None
    return cfgs


# ---------------------------------------------------------------------------- fetching


def _download(repo_id: str, patterns: tuple[str, ...]) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, allow_patterns=list(patterns))


def _tokenizer(model: Any):
    """The tokenizer a job's prompts are cut with (its model's)."""
    from transformers import AutoTokenizer

    from sensdir.loading import embedded_model_dir
    from sensdir.resources import locate, model_resources

    if model.source == "transformer_lens":
        found = locate(next(r for r in model_resources(model) if r.kind == "tokenizer"))
        if found is None:
            raise ConfigError(f"the tokenizer of model {model.name!r} is not cached: it is fetched first")
        return AutoTokenizer.from_pretrained(str(found.path))
    directory = Path(model.path) if model.source == "embedded" and model.path else embedded_model_dir()
    return AutoTokenizer.from_pretrained(str(directory / "tokenizer"))


class _Rows:
    """How many rows of a stream the jobs read: each job takes documents, in order, until it
    has ``n_stats + n_pool + n_prompts`` of at least ``n_ctx`` tokens (``sensdir.data``)."""

    def __init__(self, r: Resource):
        cache: dict[Any, Any] = {}
        self.jobs = []
        for model, data in r.needs:
            key = (model.source, model.name, model.path)
            if key not in cache:
                cache[key] = _tokenizer(model)
            self.jobs.append([cache[key], data, data.n_stats + data.n_pool + data.n_prompts])

    def take(self, text: str) -> bool:
        """Count one row; True once every job has all it needs."""
        from sensdir.data import prompt_ids

        for job in self.jobs:
            if job[2] > 0 and prompt_ids(text, job[0], job[1]) is not None:
                job[2] -= 1
        return all(job[2] <= 0 for job in self.jobs)


def _prefetched_enough(r: Resource) -> bool:
    from sensdir import data_cache

    assert r.data is not None
    path = data_cache.path_for(r.data, r.seed)
    if not data_cache.rows_in(path, r.data, r.seed):
        return False
    rows = _Rows(r)
    return any(rows.take(t) for t in data_cache.read_texts(path, r.data))


def _fetch_dataset(r: Resource) -> str:
    from sensdir import data_cache
    from sensdir.data import hf_texts

    assert r.data is not None
    rows, texts, done = _Rows(r), [], False
    for text in hf_texts(r.data, r.seed):
        texts.append(text)
        if rows.take(text):
            done = True
            break
    data_cache.write_rows(data_cache.path_for(r.data, r.seed), r.data, r.seed, texts)
    return "" if done else f"the stream ended after {len(texts)} rows, fewer than the jobs need"


def fetch(r: Resource) -> str:
    """Download ``r`` into the local caches; returns a note ("" when there is none)."""
    if r.kind == "dataset":
        return _fetch_dataset(r)
    repo = str(r.repo_id)
    if r.kind == "tokenizer":
        _download(repo, TOKENIZER_FILES)
    elif r.kind == "model":
        _download(repo, CONFIG_FILES + WEIGHT_PATTERNS)
        from sensdir.resources import locate

        if locate(r) is None:  # a repo without safetensors weights
            _download(repo, BIN_PATTERNS)
    else:
        _download(repo, (f"{r.folder}/*",))
    return ""


# ---------------------------------------------------------------------------- the listing


@dataclass
class Line:
    resource: Resource
    status: str
    found: Found | None = None
    note: str = ""


def _fetched(r: Resource, found: Found | None) -> Line:
    """Fetch ``r`` unless ``found`` holds all the jobs read (for a dataset: counted with their
    tokenizers); the line saying what happened."""
    from sensdir.resources import locate

    try:
        if found is not None and (r.kind != "dataset" or _prefetched_enough(r)):
            return Line(r, "found", found, found.note)
        note = fetch(r)
    except Exception as e:  # noqa: BLE001 - reported per resource; the others are still fetched
        return Line(r, "failed", note=" ".join(f"{type(e).__name__}: {e}".split())[:400])
    found = locate(r)
    if found is None:
        return Line(r, "failed", None, note or "not in the cache after fetching")
    return Line(r, "fetched", found, note or found.note)


def _handle(r: Resource, mode: str) -> Line:
    from sensdir.resources import locate

    found = locate(r)
    if not r.remote:
        return Line(r, "local", found) if found else Line(r, "missing", note="a local path: prefetch cannot fetch it")
    if mode == "fetch":
        return _fetched(r, found)
    return Line(r, "found", found, found.note) if found else Line(r, "missing")


def _size(n: int) -> str:
    x = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if x < 1000 or unit == "GB":
            break
        x /= 1000
    return f"{n} B" if unit == "B" else f"{x:.1f} {unit}"


def _target(ln: Line) -> str:
    """Where the resource is (found), or where it comes from."""
    r = ln.resource
    if ln.found is not None:
        return str(ln.found.path)
    if r.kind == "dataset" and r.remote and r.data is not None:
        from sensdir import data_cache

        return f"(to {data_cache.path_for(r.data, r.seed)})"
    if r.repo_id is not None:
        return f"(hub: {r.repo_id}{'/' + r.folder if r.folder else ''})"
    return f"({r.path})"


def listing(lines: list[Line]) -> str:
    """One line per resource: kind, status, size, name, path; then the notes."""
    rows = [("kind", "status", "size", "resource", "path")]
    rows += [
        (ln.resource.kind, ln.status, _size(ln.found.size) if ln.found else "-", ln.resource.name, _target(ln)) for ln in lines
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    out += [f"  {ln.resource.kind} {ln.resource.name}: {ln.note}" for ln in lines if ln.note]
    return "\n".join(out)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sensdir-prefetch",
        description="Fill the Hugging Face cache (and prefetch streamed data as Parquet) with everything the jobs of "
        "these overrides load, for compute nodes without internet.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fetch nothing; fail naming every missing resource")
    mode.add_argument("--dry-run", action="store_true", help="fetch nothing; list what is cached and what is missing")
    p.add_argument(
        "-m", "--multirun", action="store_true", help="accepted for symmetry with sensdir-run: sweeps are always expanded"
    )
    p.add_argument("overrides", nargs="*", help="the run's overrides, e.g. experiment=gp24_blowup")
    return p.parse_args(argv)


def run(argv: list[str]) -> int:
    from sensdir.resources import collect, hub_cache, missing_error, unreachable_kinds

    args = _parse(argv)
    cfgs = job_configs(args.overrides)
    resources = collect(cfgs)
    n = f"{len(cfgs)} job{'s' if len(cfgs) != 1 else ''}"
    if not resources:
        print(f"sensdir-prefetch: nothing to fetch for {n}: they use only the model, SAEs and data shipped with sensdir")
        print("(embedded) or built by construction, and run offline as they are.")
        return 0
    mode = "check" if args.check else "dry-run" if args.dry_run else "fetch"
    if mode == "fetch" and unreachable_kinds():
        print("sensdir-prefetch: warning: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set here; unset it to fetch", file=sys.stderr)
    from sensdir import data_cache

    print(f"sensdir-prefetch: {len(resources)} resources for {n} (Hugging Face cache {hub_cache()}, data {data_cache.root()})")
    lines = [_handle(r, mode) for r in resources]
    print(listing(lines))
    failed = [ln for ln in lines if ln.status in ("missing", "failed")]
    if failed and mode == "check":
        raise missing_error([ln.resource for ln in failed], args.overrides, offline=False)
    if failed and mode == "fetch":
        what = "; ".join(f"{ln.resource.label}: {ln.note or ln.status}" for ln in failed)
        raise MissingResourceError(f"could not fetch {what}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except SensdirError as e:
        print(f"sensdir: error: {e}", file=sys.stderr)
        return 2


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
