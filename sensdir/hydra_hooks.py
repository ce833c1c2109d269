"""What ``python -m sensdir.run`` checks and writes around Hydra, before any job starts.

- ``check_overrides``: command-line overrides that carry a credential (a key naming a secret,
  e.g. ``+hydra.job.env_set.WANDB_API_KEY=...``, or a value holding a secret) are refused
  before Hydra copies them into ``multirun.yaml`` and ``.hydra/*.yaml``.
- ``SensdirCallback`` (``hydra.callbacks`` in ``sensdir/conf/config.yaml``): before a single run,
  ``run.name`` must stay inside ``run.out_dir`` and the results folder must be writable;
  before a multirun, every job's config is composed as the sweeper will, each job's name is
  checked, and the sweep-level plan (``sensdir.artifacts.sweep_plan``) is written, so jobs
  that never start are still known.
- ``compose_config``: the composed config as frozen dataclasses, an unknown key or a value the
  schema rejects as one ``ConfigError`` (for the run and for ``sensdir-prefetch``).
- The ``sensdir_run_id`` resolver names Hydra's log folder ``<time>-<pid>``: two runs started
  in the same second do not share one.

A problem ends the command with one line ``sensdir: error: ...`` and exit status 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sensdir.artifacts.identity import job_key, name_problem, sweep_dir
from sensdir.artifacts.sweep_plan import write_sweep_plan
from sensdir.config import SensdirConfig, to_config
from sensdir.errors import ConfigError

# The last component of an override's key that names a credential (not e.g. ``n_tokens``).
SECRET_KEY = re.compile(r"(api[_-]?key|secret|passw(or)?d|credentials?|(^|_)token|auth)$", re.IGNORECASE)
# A value that spells a credential assignment, e.g. in a SLURM setup line.
SECRET_ASSIGNMENT = re.compile(r"(api[_-]?key|_token|secret|passw(or)?d)\s*[=:]", re.IGNORECASE)


def fail(message: str) -> NoReturn:
    print(f"sensdir: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_id() -> str:
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}-{os.getpid()}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("sensdir_run_id"):
        OmegaConf.register_new_resolver("sensdir_run_id", run_id, use_cache=True)


def check_overrides(args: list[str]) -> str | None:
    """Why the command line may not run (an override carrying a credential), or None."""
    from sensdir.reduce.secrets import secret_values

    secrets = secret_values()
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-"):
            continue
        last = key.lstrip("+~").split(".")[-1]
        if SECRET_KEY.search(last) or SECRET_ASSIGNMENT.search(value) or any(s in value for s in secrets):
            return (
                f"the override {key}=... carries a credential; Hydra would write it to its log files "
                f"under the results folder. Set it in the environment instead (e.g. export {last.upper()}=...; "
                f"a SLURM task inherits the submitting shell's environment)"
            )
    return None


def unknown_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys added with ``+key=value`` that no config dataclass has (e.g. ``+data.n_prompt``)."""
    out = []
    cls = OmegaConf.get_type(node)
    fields = {f.name for f in dataclasses.fields(cls)} if cls is not None and dataclasses.is_dataclass(cls) else None
    for key in map(str, node.keys()):
        if fields is not None and key not in fields:
            out.append(f"{prefix}{key}")
        elif OmegaConf.is_dict(node._get_node(key)):
            out += unknown_keys(node[key], f"{prefix}{key}.")
    return out


def compose_config(cfg: DictConfig) -> SensdirConfig:
    """``to_config`` with its failures (an unknown key, a value the schema rejects) as ConfigError."""
    try:
        return to_config(cfg)
    except (dataclasses.FrozenInstanceError, OmegaConfBaseException, TypeError, ValueError) as e:
        unknown = unknown_keys(cfg)
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(unknown)}; python -m sensdir.run --cfg job lists the valid ones"
            ) from e
        raise ConfigError(f"the composed config is invalid: {type(e).__name__}: {e}") from e


def _probe_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sensdir-probe-", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        fail(f"cannot write results to {e.filename or folder}: {e.strerror or e}")


def _check_name(name: Any) -> None:
    why = name_problem(str(name))
    if why is not None:
        fail(f"run.name={name!r} {why}: it must be a relative name inside run.out_dir (set run.out_dir to write elsewhere)")


def job_overrides(config: DictConfig) -> list[list[str]] | None:
    """Every job's overrides, as Hydra's basic sweeper will launch them (None for another sweeper)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).endswith("BasicSweeper"):
        return None
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(args), None)
    return batch


def _plan_entry(config: DictConfig, num: int, overrides: list[str]) -> tuple[Path | None, dict[str, Any]]:
    """(the job's sweep folder, its sweep-plan entry), composing its config as the launcher will."""
    from hydra.core.global_hydra import GlobalHydra

    entry: dict[str, Any] = {"job_num": num, "overrides": list(overrides)}
    try:
        job_cfg = GlobalHydra.instance().config_loader().load_sweep_config(config, list(overrides))
        _check_name(job_cfg.run.name)
        with open_dict(job_cfg):
            del job_cfg["hydra"]
        cfg = to_config(job_cfg)
        root = sweep_dir(cfg)
    except Exception as e:  # noqa: BLE001 - this job fails on its own, with its message
        entry["error"] = f"{type(e).__name__}: {e}".strip()[:500]
        return None, entry
    entry.update(job_key=job_key(cfg), shard=cfg.run.shard, shards=cfg.run.shards)
    return root, entry


def write_sweep_plans(config: DictConfig) -> list[Path]:
    """The sweep plan of this multirun in each sweep folder its jobs write to."""
    batch = job_overrides(config)
    if batch is None:
        return []
    hydra_dir = str(config.hydra.sweep.dir)
    by_root: dict[Path, list[dict[str, Any]]] = {}
    for num, overrides in enumerate(batch):
        root, entry = _plan_entry(config, num, overrides)
        if root is not None:
            by_root.setdefault(root, []).append(entry)
    written = []
    for root, jobs in by_root.items():
        _probe_writable(root)
        try:
            written.append(write_sweep_plan(root, Path(hydra_dir).name, jobs, hydra_dir))
        except OSError as e:
            fail(f"cannot write the sweep plan under {root}: {e.strerror or e}")
    return written


class SensdirCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_name(OmegaConf.select(config, "run.name"))
        _probe_writable(Path(str(config.run.out_dir)) / str(config.run.name))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_name(OmegaConf.select(config, "run.name"))
        write_sweep_plans(config)


register_resolvers()
