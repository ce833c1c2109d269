"""W&B never breaks a reduce: WANDB_MODE / WANDB_DISABLED honoured, ``auto`` online only when
a key is set and the server answers, any failure an offline run (or none) with one warning.
Servers here are local sockets on 127.0.0.1 only (docs/reliability.md)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from sensdir.reduce.__main__ import main as reduce_main
from sensdir.reduce.synthetic import JobSpec, make_sweep
from sensdir.reduce.wb import resolve_mode, server_answers

FAKE_KEY = "fakewandbkey0123456789abcdef0123456789abcd"


@pytest.fixture()
def silent_server():
    """A W&B 'server' on 127.0.0.1 that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture()
def closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}"


@pytest.fixture()
def wb_env(monkeypatch):
    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("SENSDIR_WANDB_TIMEOUT", "0.5")
    monkeypatch.setenv("SENSDIR_WANDB_INIT_TIMEOUT", "3")
    return monkeypatch


def _never(*_):
    raise AssertionError("the W&B server must not be asked")


def test_wandb_mode_and_wandb_disabled_are_honoured(wb_env):
    wb_env.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto", probe=_never) == "offline"  # a key is set, yet no network
    wb_env.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto", probe=_never) == "disabled"
    wb_env.setenv("WANDB_MODE", "online")
    assert resolve_mode("auto", probe=_never) == "online"
    assert resolve_mode("offline", probe=_never) == "offline"  # the command line's mode wins
    wb_env.setenv("WANDB_DISABLED", "true")
    assert resolve_mode("auto", probe=_never) == resolve_mode("online", probe=_never) == "disabled"


def test_server_probe_needs_an_answer(silent_server, closed_port, wb_env):
    class Unauthorized(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        for url, answers in ((silent_server, False), (closed_port, False), (f"http://127.0.0.1:{httpd.server_port}", True)):
            wb_env.setenv("WANDB_BASE_URL", url)
            assert server_answers(timeout=0.5) is answers, url
            assert resolve_mode("auto") == ("online" if answers else "offline")
    finally:
        httpd.shutdown()


def _reduce(tmp_path, *args) -> tuple[int, dict]:
    sweep = make_sweep(tmp_path / "sweep", [JobSpec("real", 20), JobSpec("random", 20)])
    rc = reduce_main([str(sweep), "--no-progress", "--bootstrap", "10", *args])
    return rc, json.loads((sweep / "reduce" / "reduce.json").read_text())


@pytest.mark.slow
def test_auto_with_a_key_and_a_silent_server_reduces_offline(tmp_path, silent_server, wb_env, capsys):
    wb_env.setenv("WANDB_BASE_URL", silent_server)
    rc, index = _reduce(tmp_path)  # --wandb auto, the default
    err = capsys.readouterr().err
    assert rc == 0 and index["wandb"]["mode"] == "offline"
    assert [ln for ln in err.splitlines() if "warning" in ln and "does not answer" in ln]
    assert "Traceback" not in err


@pytest.mark.slow
def test_failed_online_run_falls_back_offline_with_one_warning(tmp_path, closed_port, wb_env, capsys):
    wb_env.setenv("WANDB_BASE_URL", closed_port)
    rc, index = _reduce(tmp_path, "--wandb", "online")
    err = capsys.readouterr().err
    assert rc == 0 and index["wandb"]["mode"] == "offline" and index["wandb"]["run_dir"]
    assert len([ln for ln in err.splitlines() if ln.startswith("sensdir.reduce: warning: the online W&B run failed")]) == 1


def test_wandb_failure_never_fails_the_reduce(tmp_path, wb_env, capsys):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("wandb is broken here")

    wb_env.setattr(wandb, "init", broken_init)
    rc, index = _reduce(tmp_path, "--wandb", "offline")
    assert rc == 0 and index["wandb"]["mode"] == "failed" and "wandb is broken here" in index["wandb"]["warning"]
    out = tmp_path / "sweep" / "reduce"
    assert (out / "report.html").exists() and (out / "stats.parquet").exists()
    assert "Traceback" not in capsys.readouterr().err
