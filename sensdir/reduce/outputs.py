"""The reduce's outputs as one set: written into a temporary folder beside ``<out>``, then
swapped in with renames, so ``<out>`` always holds the files of one reduce, never fresh files
beside a stale report. A reduce that fails part-way leaves the previous set untouched.
Earlier W&B runs (``<out>/wandb/``: offline runs wait there for ``wandb sync``) are carried
over into the new set."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sensdir.artifacts.layout import find_job_dirs
from sensdir.artifacts.records import follow_umask


def check_out_dir(sweep_dir: Path, out: Path) -> None:
    """The output folder is replaced as a whole: it may not be, or hold, the sweep's data."""
    s, o = sweep_dir.resolve(), out.resolve()
    if o == s or s.is_relative_to(o):
        raise ValueError(f"the reduce's output folder {out} would replace the sweep {sweep_dir}; pick another --out")
    if o.is_dir() and find_job_dirs(o):
        raise ValueError(f"the reduce's output folder {out} holds shards of a sweep; pick another --out")


@contextmanager
def output_set(out: Path) -> Iterator[Path]:
    """Yields the temporary folder to write into; on success it becomes ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    follow_umask(new, directory=True)
    try:
        yield new
        if (out / "wandb").is_dir() and not (new / "wandb").exists():
            os.replace(out / "wandb", new / "wandb")
        _swap(new, out)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def _swap(new: Path, out: Path) -> None:
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
