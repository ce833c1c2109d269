"""A single-node SLURM cluster on this machine, for tests and for trying the sweep scripts.

``python -m sensdir.slurm_local start [DIR]`` writes a minimal ``slurm.conf`` under DIR (free
ports, its own munge socket, so several clusters run side by side), starts ``munged``,
``slurmctld`` and ``slurmd`` as root, and waits until ``sinfo`` shows the node idle. It prints
``export SLURM_CONF=DIR/slurm.conf`` on stdout (SLURM's commands and the submitit launcher read
the cluster from that variable), so ``eval "$(... start)"`` sets it; the node and a first sweep
command go to stderr. ``stop [DIR]`` stops the daemons started from DIR, by their pid files.

DIR is the user's own: ``$SENSDIR_SLURM_DIR`` if set, else ``$XDG_RUNTIME_DIR/sensdir-slurm``,
else ``~/.cache/sensdir/slurm`` (under sudo: of the user who ran sudo), else, where that path is
too long for the daemons' UNIX sockets, ``/tmp/sensdir-slurm-<user>``. ``start`` records the
user in DIR/owner; neither ``start`` nor ``stop`` touches a cluster another user owns. Needs
root and ``apt-get install slurm-wlm munge``; ``check`` says whether they are there. Only the
standard library is used, so this also runs outside the project's virtualenv.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DIR_ENV = "SENSDIR_SLURM_DIR"
PARTITION = "debug"
# munged and slurmstepd bind UNIX sockets under DIR: at most 107 bytes on Linux (sun_path[108]);
# slurmstepd's is SlurmdSpoolDir/<node>_<job id>.<step id>, each id up to 10 digits.
SOCKET_PATH_MAX = 107
_STEP_SOCKET = len("/_4294967294.4294967294")


# slurm.conf settings every local cluster shares; write_conf adds its host, ports and paths.
_FIXED_CONF = (
    "ClusterName=sensdir-local SlurmUser=root SlurmdUser=root AuthType=auth/munge CredType=cred/munge "
    "ProctrackType=proctrack/linuxproc TaskPlugin=task/none SelectType=select/cons_tres SelectTypeParameters=CR_Core "
    "SchedulerType=sched/backfill JobAcctGatherType=jobacct_gather/none AccountingStorageType=accounting_storage/none "
    "JobCompType=jobcomp/none MpiDefault=none ReturnToService=2 JobRequeue=1 KillWait=5 MinJobAge=600 InactiveLimit=0 "
    "SlurmctldTimeout=30 SlurmdTimeout=30 SlurmctldDebug=info SlurmdDebug=info"
).split()


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


def invoking_user() -> int:
    """The uid a cluster started here belongs to: under sudo the user who ran sudo, else ours."""
    uid, sudo = os.getuid(), os.environ.get("SUDO_UID", "")
    return int(sudo) if uid == 0 and sudo.isdigit() else uid


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _host() -> str:
    return socket.gethostname().split(".")[0]


def socket_path_problem(root: Path) -> str | None:
    """None if the UNIX sockets of a cluster in ``root`` fit the system's limit, else why not."""
    root = Path(os.path.abspath(root))
    sockets = (root / "munge" / "munge.socket", f"{root / 'spool'}{'x' * (len(_host()) + _STEP_SOCKET)}")
    longest = max(len(os.fsencode(s)) for s in sockets)
    if longest <= SOCKET_PATH_MAX:
        return None
    return f"{root} is too long for the UNIX sockets munged and slurmstepd make in it ({longest} > {SOCKET_PATH_MAX} bytes); name a shorter DIR"


def default_dir() -> Path:
    """The folder ``start`` and ``stop`` use when none is named: the user's own (module docstring)."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    uid = invoking_user()
    mine = uid == os.getuid()
    candidates = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir() and Path(runtime).stat().st_uid == uid:
        candidates.append(Path(runtime) / "sensdir-slurm")
    try:
        home = Path.home() if mine else Path(pwd.getpwuid(uid).pw_dir)
        cache = Path(os.environ["XDG_CACHE_HOME"]) if mine and os.environ.get("XDG_CACHE_HOME") else home / ".cache"
        if home.is_dir():  # not a home like /nonexistent
            candidates.append(cache / "sensdir" / "slurm")
    except (KeyError, RuntimeError):
        pass
    for c in candidates:
        if c.is_absolute() and socket_path_problem(c) is None:
            return c
    return Path(tempfile.gettempdir()) / f"sensdir-slurm-{user_name(uid).replace(' ', '')}"


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

    @property
    def owner_file(self) -> Path:
        return self.root / "owner"

    def owner(self) -> int | None:
        """The uid this folder's cluster belongs to: the one recorded in DIR/owner, else the folder's."""
        try:
            return int(self.owner_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        try:
            return self.root.stat().st_uid
        except OSError:
            return None

    def check_owner(self) -> None:
        """Refuse a folder whose cluster belongs to another user."""
        owner, me = self.owner(), invoking_user()
        # a folder without DIR/owner made by this process's user (root, under sudo) is free too
        if owner is None or owner == me or (owner == os.geteuid() and not self.owner_file.exists()):
            return
        raise ClusterUnavailable(
            f"{self.root} holds the cluster of {user_name(owner)}, not yours ({user_name(me)}); "
            f"leave it alone and start your own: launch/local_slurm.sh start [DIR] (default {default_dir()})"
        )

    def env(self, base: dict | None = None) -> dict:
        """An environment in which SLURM's commands talk to this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env(), capture_output=True, text=True, check=check, timeout=timeout)

    # -- configuration -------------------------------------------------------------------
    def write_conf(self) -> None:
        host = _host()
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
                    f"SlurmctldHost={host}",
                    *_FIXED_CONF,
                    # this cluster's own munged; a requeued job waits cred_expire + 1 s before it
                    # may start again (default 120)
                    f"AuthInfo=socket={self.munge_socket},cred_expire=10",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={slurmd_port}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
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
        """The pid in DIR/<name>.pid if that process is the daemon started from this folder (its
        command line names a file in it), else None: a stale pid file never reaches another process."""
        try:
            pid = int((self.root / f"{name}.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        here = os.fsencode(f"{self.root}/")
        ours = Path(os.fsdecode(cmdline[0])).name == name and any(here in arg for arg in cmdline[1:])
        return pid if ours else None

    def _alive(self, name: str) -> bool:
        pid = self._pid(name)
        return pid is not None and _pid_alive(pid)

    def start(self, timeout: float = 60) -> LocalCluster:
        reason = why_unavailable() or socket_path_problem(self.root)
        if reason:
            raise ClusterUnavailable(reason)
        self.check_owner()
        if self._alive("slurmctld") and self._alive("slurmd") and self._idle():
            return self
        self.stop()
        self.root.mkdir(parents=True, exist_ok=True)
        me = invoking_user()
        self.owner_file.write_text(f"{me} {user_name(me)}\n")
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

    def stop(self) -> list[str]:
        """Stop the daemons started from this directory, by their pid files; returns their names."""
        self.check_owner()
        stopped = []
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self._pid(name)
            if pid is None:
                (self.root / f"{name}.pid").unlink(missing_ok=True)
                continue
            stopped.append(f"{name} (pid {pid})")
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
        return stopped


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
    p.add_argument("dir", nargs="?", help=f"state, spool, logs and pids (default: ${DIR_ENV}, else {default_dir()})")
    a = p.parse_args(argv)
    root = Path(a.dir).expanduser() if a.dir else default_dir()
    if a.action == "check":
        reason = why_unavailable() or socket_path_problem(root)
        print(reason or f"ok: a local SLURM cluster can be started here, in {root}")
        return 1 if reason else 0
    cluster = LocalCluster(Path(os.path.abspath(root)))
    try:
        if a.action == "stop":
            stopped = cluster.stop()
            print(f"stopped {', '.join(stopped)} of {cluster.root}" if stopped else f"no cluster runs from {cluster.root}")
            return 0
        cluster.start()
    except ClusterUnavailable as e:
        print(f"sensdir.slurm_local: {e}", file=sys.stderr)
        return 1
    export, *hints = ready_commands(cluster.conf)
    print(cluster.run("sinfo").stdout, end="", file=sys.stderr)
    print(export, flush=True)
    print("\n".join(hints), file=sys.stderr)
    return 0


# A first sweep this one CPU node can run: hydra/launcher=slurm_local is hydra/launcher=slurm with
# its partition, no GPU, one CPU and 2 GB per task.
TRIAL_SWEEP = (
    "launch/sweep.sh trial hydra/launcher=slurm_local experiment=quickstart direction=real,random "
    "data.n_prompts=4 schedule.n_steps=20"
)


def ready_commands(conf: Path) -> list[str]:
    """What ``start`` prints: the SLURM_CONF export (stdout), then how to go on (stderr)."""
    d = shlex.quote(str(conf.parent))
    return [
        f"export SLURM_CONF={shlex.quote(str(conf))}",
        f'# run that export in your shell (or: eval "$(launch/local_slurm.sh start {d})"), then a first sweep:',
        TRIAL_SWEEP,
        "python -m sensdir.status results/trial",
        f"launch/local_slurm.sh stop {d}",
    ]


if __name__ == "__main__":
    sys.exit(main())
