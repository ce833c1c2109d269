"""A single-node SLURM cluster on this machine, for tests and for trying the sweep scripts.

``python -m sensdir.slurm_local start [DIR]`` writes a minimal ``slurm.conf`` under DIR
(default ``/tmp/sensdir-slurm``; free ports, its own munge socket, so several clusters can run
side by side), starts ``munged``, ``slurmctld`` and ``slurmd`` as root, and waits until
``sinfo`` shows the node idle. It prints
``export SLURM_CONF=DIR/slurm.conf``: SLURM's commands (sbatch, squeue, scontrol) and the
submitit launcher read the cluster from that variable. ``stop [DIR]`` stops the daemons it
started, by the pids in DIR. Needs root and Debian's ``slurm-wlm`` and ``munge`` packages
(``apt-get install slurm-wlm munge``); ``check`` says whether they are there.

Only the standard library is used, so this also runs outside the project's virtualenv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path("/tmp/sensdir-slurm")
PARTITION = "debug"


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be started here; the message says why."""


def why_unavailable() -> str | None:
    """None if a local cluster can be started here, else the reason it cannot."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "not a POSIX system"
    if os.geteuid() != 0:
        return "slurmctld/slurmd/munged must run as root here and this process is not root"
    missing = [
        b
        for b in ("munged", "munge", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol")
        if shutil.which(b) is None and not Path("/usr/sbin", b).exists()
    ]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install slurm-wlm munge)"
    if not Path("/etc/munge/munge.key").exists():
        return "no /etc/munge/munge.key (the munge package creates it on install)"
    return None


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class LocalCluster:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def env(self, base: dict | None = None) -> dict:
        """An environment in which SLURM's commands talk to this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, check=check, timeout=timeout)

    # -- configuration -------------------------------------------------------------------
    def write_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        r = self.root
        # free ports: several clusters (test sessions) may run on one machine at once
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(
            "\n".join(
                [
                    "# Written by sensdir.slurm_local: a one-node cluster for tests and trials.",
                    "ClusterName=sensdir-local",
                    f"SlurmctldHost={host}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    # this cluster's own munged; a requeued job waits cred_expire + 1 s before it
                    # may start again (default 120)
                    f"AuthInfo=socket={self.munge_socket},cred_expire=10",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={slurmd_port}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SchedulerType=sched/backfill",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "JobRequeue=1",
                    "KillWait=5",
                    "MinJobAge=600",
                    "InactiveLimit=0",
                    "SlurmctldTimeout=30",
                    "SlurmdTimeout=30",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
                    "SlurmctldDebug=info",
                    "SlurmdDebug=info",
                    f"NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
                    f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    # -- daemons -------------------------------------------------------------------------
    def _munge_ok(self) -> bool:
        sock = f"--socket={self.munge_socket}"
        try:
            cred = subprocess.run(["munge", sock, "-n"], capture_output=True, timeout=10)
            if cred.returncode != 0:
                return False
            return subprocess.run(["unmunge", sock], input=cred.stdout, capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _start_munge(self) -> None:
        """This cluster's own munged, on a socket in its directory, so that stopping it
        disturbs no other cluster or system munged."""
        self.munge_socket.parent.mkdir(parents=True, exist_ok=True)
        self.munge_socket.parent.chmod(0o755)
        # --force: munged refuses to start as root over a log directory it does not own otherwise.
        subprocess.run(
            [
                _bin("munged"),
                "--force",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.root / 'munged.pid'}",
                f"--log-file={self.log_dir / 'munged.log'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        _wait(self._munge_ok, 15, "munged to answer")

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.root / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _alive(self, name: str) -> bool:
        pid = self._pid(name)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    def start(self, timeout: float = 60) -> LocalCluster:
        reason = why_unavailable()
        if reason:
            raise ClusterUnavailable(reason)
        if self._alive("slurmctld") and self._alive("slurmd") and self._idle():
            return self
        self.stop()
        self.write_conf()
        self._start_munge()
        env = self.env()
        for daemon, args in (("slurmctld", ["-c", "-i"]), ("slurmd", [])):
            res = subprocess.run([_bin(daemon), "-f", str(self.conf), *args], env=env, capture_output=True, text=True, timeout=60)
            if res.returncode != 0:
                raise ClusterUnavailable(f"{daemon} did not start: {res.stderr.strip()} (log: {self.log_dir})")
        try:
            _wait(self._idle, timeout, "the node to be idle in sinfo")
        except TimeoutError as e:
            raise ClusterUnavailable(f"{e}; sinfo: {self.run('sinfo', check=False).stdout} (logs: {self.log_dir})") from None
        return self

    def _idle(self) -> bool:
        try:
            out = self.run("sinfo", "-h", "-o", "%T", check=False, timeout=10).stdout.split()
        except subprocess.TimeoutExpired:
            return False
        return bool(out) and all(s.rstrip("*") in ("idle", "mixed", "allocated") for s in out)

    def stop(self) -> None:
        """Stop the daemons started from this directory, by their pid files."""
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self._pid(name)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            else:
                try:
                    _wait(lambda pid=pid: not _pid_alive(pid), 20, f"{name} (pid {pid}) to exit")
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)
            (self.root / f"{name}.pid").unlink(missing_ok=True)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sensdir.slurm_local", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("start", "stop", "check"))
    p.add_argument("dir", nargs="?", default=str(DEFAULT_DIR), help=f"state, spool and logs (default {DEFAULT_DIR})")
    a = p.parse_args(argv)
    if a.action == "check":
        reason = why_unavailable()
        print(reason or "ok: a local SLURM cluster can be started here")
        return 1 if reason else 0
    cluster = LocalCluster(Path(a.dir).resolve())
    if a.action == "stop":
        cluster.stop()
        print(f"stopped the daemons of {cluster.root}")
        return 0
    try:
        cluster.start()
    except ClusterUnavailable as e:
        print(f"sensdir.slurm_local: {e}", file=sys.stderr)
        return 1
    print(cluster.run("sinfo").stdout, end="")
    print("\n".join(ready_commands(cluster.conf)))
    return 0


# What a task needs on this one CPU node (hydra/launcher=slurm asks for a GPU partition and 4 CPUs).
LOCAL_OVERRIDES = (
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.gres=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
)


def ready_commands(conf: Path) -> list[str]:
    """The lines ``start`` prints: the SLURM_CONF export, then a sweep this node can run."""
    return [
        f"export SLURM_CONF={conf}",
        "# then, for a first sweep on this node (python -m sensdir.status results/trial to follow it):",
        "launch/sweep.sh trial experiment=quickstart direction=real,random run.shards=2 " + " ".join(LOCAL_OVERRIDES),
    ]


if __name__ == "__main__":
    sys.exit(main())
