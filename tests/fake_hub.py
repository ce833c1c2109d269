"""``python tests/fake_hub.py REMOTE_HF_HOME REMOTE_PARQUET [sensdir-prefetch arguments]``:
``sensdir-prefetch`` against a stand-in for the Hugging Face hub, for tests (no network).

The "hub" is another HF cache (tests/hf_fixtures.py's): ``huggingface_hub.snapshot_download``
copies the files of a repo's snapshot there that match ``allow_patterns`` (selected with
huggingface_hub's own ``filter_repo_objects``) into this process's cache, as the real one
downloads them; ``datasets.load_dataset("Skylion007/openwebtext", streaming=True)`` streams
REMOTE_PARQUET instead. Every call is printed as ``FAKE_HUB <json>``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from hf_fixtures import REVISION, repo_dir

HUB_DATASET = "Skylion007/openwebtext"


def install(remote_home: Path, remote_parquet: str) -> None:
    import datasets
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import filter_repo_objects

    def snapshot_download(repo_id, *, repo_type=None, allow_patterns=None, ignore_patterns=None, cache_dir=None, **kw):
        print("FAKE_HUB " + json.dumps({"repo": repo_id, "allow": allow_patterns}), flush=True)
        if constants.HF_HUB_OFFLINE:
            raise huggingface_hub.errors.OfflineModeIsEnabled("HF_HUB_OFFLINE=1")
        src = repo_dir(remote_home, repo_id) / "snapshots" / REVISION
        if not src.is_dir():
            raise OSError(f"404: no repo {repo_id} on the fake hub")
        names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
        dst_repo = Path(cache_dir or constants.HF_HUB_CACHE) / repo_dir(Path("."), repo_id).name
        (dst_repo / "refs").mkdir(parents=True, exist_ok=True)
        (dst_repo / "refs" / "main").write_text(REVISION)
        snap = dst_repo / "snapshots" / REVISION
        for name in filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            (snap / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, snap / name)
        snap.mkdir(parents=True, exist_ok=True)
        return str(snap)

    real_load_dataset = datasets.load_dataset

    def load_dataset(path, name=None, **kw):
        print("FAKE_HUB " + json.dumps({"dataset": path, "streaming": kw.get("streaming")}), flush=True)
        if path == HUB_DATASET:
            kw.pop("data_files", None)
            return real_load_dataset("parquet", data_files=remote_parquet, **kw)
        return real_load_dataset(path, name, **kw)

    huggingface_hub.snapshot_download = snapshot_download
    datasets.load_dataset = load_dataset


if __name__ == "__main__":
    install(Path(sys.argv[1]), sys.argv[2])
    from sensdir.prefetch import main

    sys.exit(main(sys.argv[3:]))
