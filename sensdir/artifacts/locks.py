"""One run at a time per shard: ``shard-<i>-of-<n>.lock`` in the job folder, held with
``flock`` while the shard is computed and written.

A second identical run (two launches of the same command, a requeued SLURM task overlapping
the old one) waits for the first and then finds the shard complete and skips it. The lock is
released by the kernel when its holder dies, so a killed run never blocks the next one. On a
filesystem without ``flock`` the shard runs unlocked, with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("sensdir")


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def shard_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as for any new file
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting: %s is held by another run of the same shard (%s)", path, _holder(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log.warning("no lock on %s (%s): running unlocked", path, e.strerror)
        os.ftruncate(fd, 0)
        os.write(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
