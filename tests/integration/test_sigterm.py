"""SIGTERM (how systemd, Docker and Kubernetes stop a service) stops a live run as Ctrl-C does."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_live_run_cleanly(sig: signal.Signals) -> None:
    # outside pytest's basetemp: as root the server runs as another user, and every pytest session (of anyone on
    # this machine) resets that root to 0700 (see conftest._server_dir)
    tmp_path = Path(tempfile.mkdtemp(prefix="sm-test-sigterm-"))
    tmp_path.chmod(0o755)  # the server's own user must reach its data directory below
    try:
        _run_and_stop(tmp_path, sig)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _run_and_stop(tmp_path: Path, sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "SMART_MAINTENANCE__LOG_LEVEL": "WARNING"}
    env.pop("SMART_MAINTENANCE__POSTGRES__DSN", None)  # the embedded server: it must be stopped at the end
    proc = subprocess.Popen(
        [sys.executable, "-c", "from smart_maintenance.cli.app import main; main()", "run", "--duration", "forever",
         "--speed", "600", "--assets", "3", "--out", "out", "--recovery", "rec"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    readings = tmp_path / "out" / "readings.jsonl"
    pid_file = tmp_path / ".smart-maintenance" / "pgdata" / "postmaster.pid"
    try:
        deadline = time.monotonic() + 120
        while not (readings.exists() and readings.stat().st_size > 0) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        assert pid_file.exists()  # the embedded server is up
        postmaster = int(pid_file.read_text().split()[0])
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if pid_file.exists():  # a failed stop left the server running: stop it (fast shutdown), then fail
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
    assert proc.returncode == 0, err[-3000:]
    assert "stopped by a signal (resume with the same --recovery)" in err
    stored = int(re.search(r"readings\s+│\s+([\d,]+)", err).group(1).replace(",", ""))  # the closing summary
    assert stored > 0 and sum(1 for _ in readings.open()) == stored  # the JSONL sink was flushed as far as the DB
    assert not pid_file.exists()
    assert _gone(postmaster, within_s=10)  # the embedded PostgreSQL server was stopped


def _gone(pid: int, within_s: float) -> bool:
    """The process has exited (a zombie waiting for init counts as exited): its last moments may trail its pid file."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False
