"""What SLURM says about running and ended tasks, without accounting (``sacct``).

- ``squeue_info``: state and pending reason of every task of some arrays, from ``squeue``.
- ``last_error_line``: the line of a task's log that says why it failed, skipping progress-bar
  debris (tqdm writes ``88%|████ ...`` without a newline, so SLURM's own message lands after it).
- ``install_watcher``: submitit learns that a task ended from ``sacct``; on a cluster without
  accounting every ``sacct`` call fails and the driver (``python -m sensdir.run -m
  hydra/launcher=slurm``) would wait forever for a cancelled task. The watcher installed here
  asks ``squeue`` (then ``scontrol``) whenever ``sacct`` fails, at least every
  ``POLL_S`` seconds: a task that neither lists any more has ended, and the driver goes on.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable

POLL_S = 20.0  # the driver checks the tasks' states at least this often
# Pending reasons for which the task will not start on this cluster as it is configured.
CANNOT_START = (
    "PartitionConfig",
    "BadConstraints",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "ReqNodeNotAvail",
    "InvalidAccount",
    "InvalidQOS",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxMemoryPerJob",
    "PartitionDown",
    "NodeDown",
)
_PROGRESS = re.compile(r"^.*\d+%\|[^|]*\|[^\]]*\]\s*")  # a tqdm bar, up to its closing ']'


def _squeue(args: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["squeue", "-h", "-r", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def squeue_info(job_ids: Iterable[str]) -> dict[str, tuple[str, str]] | None:
    """``{"<array>_<index>" or "<job>": (state, reason)}`` for the arrays given; None if squeue fails."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    res = _squeue(["-o", "%i|%T|%r", "-j", ",".join(arrays)])
    if res is not None and res.returncode != 0 and "Invalid job id" in res.stderr:
        res = _squeue(["-o", "%i|%T|%r"])  # squeue fails for ids it no longer knows: ask without -j
    if res is None or res.returncode != 0:
        return None
    out = {}
    for line in res.stdout.splitlines():
        jid, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        if jid:
            out[jid] = (state, "" if reason in ("None", "(null)") else reason)
    return out


def scontrol_state(job_id: str) -> str | None:
    """``JobState`` of a job SLURM still remembers (ended jobs: ``MinJobAge``), else None."""
    try:
        res = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\bJobState=(\S+)", res.stdout) if res.returncode == 0 else None
    return m.group(1) if m else None


def last_error_line(text: str) -> str | None:
    """The line that says why a task failed, progress bars left out."""
    lines = []
    for ln in re.split(r"[\r\n]+", text):
        ln = _PROGRESS.sub("", ln).strip()
        if ln and not re.search(r"\d+%\|", ln):
            lines.append(ln)
    for pattern in (
        r"^sensdir: error:",
        r"^[\w.]+(Error|Exception|Exit)\b|Error:",
        r"CANCELLED|DUE TO|TIME LIMIT|OUT OF MEMORY|oom-kill|Killed",
        r"error:",
    ):
        for ln in reversed(lines):
            if re.search(pattern, ln):
                return ln
    return lines[-1] if lines else None


def install_watcher() -> None:
    """Make submitit's SLURM jobs fall back on squeue/scontrol when sacct fails (see above)."""
    try:
        from submitit.slurm import slurm
    except ImportError:
        return
    if isinstance(slurm.SlurmJob.watcher, _FallbackWatcher):
        return

    class _Watcher(_FallbackWatcher, slurm.SlurmInfoWatcher):
        pass

    slurm.SlurmJob.watcher = _Watcher(delay_s=int(POLL_S))


class _FallbackWatcher:
    """Mixin over submitit's ``SlurmInfoWatcher``: ``update`` with squeue where sacct fails."""

    _registered: set[str]
    _finished: set[str]
    _info_dict: dict[str, dict[str, str]]
    _num_calls: int
    _last_status_check: float

    def update(self) -> None:
        import time

        command = self._make_command()  # type: ignore[attr-defined]
        if command is None:
            return
        self._num_calls += 1
        try:
            output = subprocess.check_output(command, shell=False, stderr=subprocess.PIPE, timeout=60)
            info = self.read_info(output)  # type: ignore[attr-defined]
        except (OSError, subprocess.SubprocessError):
            info = {}
        unknown = (self._registered - self._finished) - set(info)
        if unknown:  # sacct failed or does not know them (no accounting)
            info.update(self._from_squeue(unknown))
        self._info_dict.update(info)
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):  # type: ignore[attr-defined]
                self._finished.add(job_id)

    def _from_squeue(self, pending: set[str]) -> dict[str, dict[str, str]]:
        live = squeue_info(pending)
        if live is None:
            return {}
        out = {}
        for job_id in pending:
            if job_id in live:
                out[job_id] = {"JobID": job_id, "State": live[job_id][0]}
            else:  # no longer queued: it ended (scontrol may still know how)
                out[job_id] = {"JobID": job_id, "State": scontrol_state(job_id) or "ENDED"}
        return out
