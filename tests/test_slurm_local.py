"""sensdir.slurm_local without starting a cluster: the per-user default folder, the UNIX socket
length limit, a folder another user owns refused by start and stop, and stop reaching no process
but the daemons started from its folder."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import sensdir.slurm_local as sl


@pytest.fixture
def plain_env(monkeypatch):
    """No folder named, a HOME of its own, short (pytest's tmp_path can be too long for the sockets)."""
    for var in (sl.DIR_ENV, "XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "SUDO_UID"):
        monkeypatch.delenv(var, raising=False)
    short = Path(tempfile.mkdtemp(prefix="sd-"))
    (short / "home").mkdir()
    monkeypatch.setenv("HOME", str(short / "home"))
    yield short
    shutil.rmtree(short)


def test_default_folder_is_the_users_own(plain_env, monkeypatch):
    home = plain_env / "home"
    assert sl.default_dir() == home / ".cache" / "sensdir" / "slurm"
    runtime = plain_env / "run"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert sl.default_dir() == runtime / "sensdir-slurm"
    monkeypatch.setenv(sl.DIR_ENV, str(plain_env / "named"))
    assert sl.default_dir() == plain_env / "named"


def test_default_folder_leaves_a_home_too_long_for_the_sockets(plain_env, monkeypatch):
    deep = plain_env / ("d" * 100)
    deep.mkdir()
    monkeypatch.setenv("HOME", str(deep))
    assert sl.socket_path_problem(deep / ".cache" / "sensdir" / "slurm")
    assert sl.default_dir() == Path(tempfile.gettempdir()) / f"sensdir-slurm-{sl.user_name(os.getuid())}"


def test_socket_limit_is_the_one_of_munged_and_slurmstepd():
    # slurmstepd's socket, SlurmdSpoolDir/<node>_<job>.<step>, is the longest: find the longest DIR that fits
    host = len(sl._host())
    fits = Path("/" + "a" * (sl.SOCKET_PATH_MAX - len("/spool") - host - len("/_4294967294.4294967294") - 1))
    assert sl.socket_path_problem(fits) is None
    assert "too long for the UNIX sockets" in sl.socket_path_problem(Path(f"{fits}b"))


def test_start_and_stop_refuse_a_folder_another_user_owns(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.setattr(sl, "why_unavailable", lambda: None)
    other = os.getuid() + 4242
    (tmp_path / "owner").write_text(f"{other} someone\n")
    cluster = sl.LocalCluster(tmp_path)
    with pytest.raises(sl.ClusterUnavailable, match="holds the cluster of"):
        cluster.check_owner()
    for action in ("start", "stop"):
        assert sl.main([action, str(tmp_path)]) == 1
        assert "not yours" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owner"]  # nothing written, nothing started
    (tmp_path / "owner").write_text(f"{os.getuid()} {getpass.getuser()}\n")
    cluster.check_owner()  # the user's own folder


def test_stop_reaches_only_the_daemons_of_its_folder(tmp_path):
    """Pid files whose process is not a daemon started from this folder (stale, reused pids)
    are dropped, the processes left alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path / "slurm.conf")])
    try:
        for name in ("slurmd", "slurmctld", "munged"):
            (tmp_path / f"{name}.pid").write_text(f"{other.pid}\n")
        assert sl.LocalCluster(tmp_path).stop() == []
        assert other.poll() is None
        assert not list(tmp_path.glob("*.pid"))
    finally:
        other.kill()
        other.wait()


def test_start_prints_the_export_on_stdout_and_how_to_go_on(tmp_path):
    export, *hints = sl.ready_commands(tmp_path / "slurm.conf")
    assert export == f"export SLURM_CONF={tmp_path / 'slurm.conf'}"
    assert sl.TRIAL_SWEEP in hints and hints[-1] == f"launch/local_slurm.sh stop {tmp_path}"
    spaced = sl.ready_commands(tmp_path / "a b" / "slurm.conf")[0]
    assert spaced == f"export SLURM_CONF='{tmp_path / 'a b' / 'slurm.conf'}'"  # evaluates as one path
