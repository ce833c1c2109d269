"""What a job folder holds, file by file: which Parquet files a reader may read.

Readers (the reduce's completeness check, ``open_sweep``, ``sensdir.status``) read exactly
the Parquet files that complete manifests name, after checking each against the size and
sha256 its manifest recorded. Every other Parquet file in the folder is sorted out and named:

- ``unfinished``: a shard's own file (``shard-<i>-of-<n>.parquet``) without a complete
  manifest: a job killed between the Parquet file and its manifest, or a manifest deleted;
- ``damaged``: a file whose bytes differ from its manifest's record (a byte flip, truncation,
  an overwrite), or a complete manifest whose file is gone or is not its shard's own;
- ``foreign``: any other Parquet file (a copy, a download, another tool's output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensdir.artifacts.layout import MANIFEST, PARQUET, PLAN, ShardFiles, ShardId, shard_files_in
from sensdir.artifacts.records import complete_manifest, named_parquet, verify_parquet


@dataclass(frozen=True)
class ShardRecord:
    files: ShardFiles
    manifest: dict[str, Any] | None  # the complete manifest, None for an unfinished shard

    @property
    def path(self) -> Path:
        return self.files.parquet


@dataclass
class JobScan:
    job_dir: Path
    plans: dict[ShardId, Path] = field(default_factory=dict)
    finished: list[ShardRecord] = field(default_factory=list)  # the files readers read
    unfinished: list[ShardRecord] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # path -> what failed
    foreign: dict[str, str] = field(default_factory=dict)  # path -> why it is not read

    def has_files(self, sid: ShardId) -> bool:
        """Whether the shard left any file here (plan, Parquet or manifest): it started."""
        files = ShardFiles(self.job_dir, sid)
        return any(p.exists() for p in (files.plan, files.parquet, files.manifest))


FOREIGN = "not a shard file of this job (no manifest or plan names it); readers skip it"


def scan_job(job_dir: Path, verify: bool = True) -> JobScan:
    """Sort the Parquet files of one job folder (see the module's docstring). ``verify``:
    check each finished file's sha256 against its manifest (reads every byte once)."""
    job_dir = Path(job_dir)
    scan = JobScan(job_dir, plans=shard_files_in(job_dir, PLAN))
    own = shard_files_in(job_dir, PARQUET)
    accounted: set[Path] = set()
    for sid, manifest_path in shard_files_in(job_dir, MANIFEST).items():
        files = ShardFiles(job_dir, sid)
        manifest = complete_manifest(manifest_path)
        if manifest is None:
            continue
        accounted.add(files.parquet)
        why = named_parquet(files, manifest)
        if why is None and not files.parquet.exists():
            why = "its manifest says complete but the Parquet file is missing"
        if why is None and verify:
            why = verify_parquet(files.parquet, manifest)
        if why is not None:
            scan.damaged[str(files.parquet)] = why
        else:
            scan.finished.append(ShardRecord(files, manifest))
    for sid, path in own.items():
        if path not in accounted:
            accounted.add(path)
            scan.unfinished.append(ShardRecord(ShardFiles(job_dir, sid), None))
    for path in sorted(job_dir.glob("*.parquet")):
        if path not in accounted and path.is_file():
            scan.foreign[str(path)] = FOREIGN
    return scan
