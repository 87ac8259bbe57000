"""A live flow's re-read of the admitted assets does not hold the flow's thread (stores/admission.py)."""

from __future__ import annotations

import threading
import time

from smart_maintenance.stores.admission import Admission


def test_the_first_read_is_waited_for_and_later_reads_run_in_the_background() -> None:
    now = [0.0]
    stored = {"pump-9"}
    release = threading.Event()
    calls = []

    def load() -> set[str]:
        calls.append(threading.current_thread().name)
        if len(calls) > 1:
            release.wait(5)  # a slow database
        return set(stored)

    adm = Admission({"pump-1"}, load=load, refresh_s=5.0, clock=lambda: now[0])
    assert adm("pump-9") and not adm("pump-7")  # the first read, in the caller's thread
    assert calls == [threading.current_thread().name]
    stored.add("pump-7")
    now[0] = 5.0
    t0 = time.monotonic()
    assert not adm("pump-7")  # due: answered from memory while the read runs
    assert time.monotonic() - t0 < 1.0
    release.set()
    deadline = time.monotonic() + 5
    while not adm("pump-7") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert adm("pump-7") and calls[1] == "admission-refresh"


def test_a_failed_background_read_keeps_what_was_known() -> None:
    now = [0.0]
    fail = [False]

    def load() -> set[str]:
        if fail[0]:
            raise OSError("database down")
        return {"pump-9"}

    adm = Admission(set(), load=load, refresh_s=1.0, clock=lambda: now[0])
    assert adm("pump-9")
    fail[0], now[0] = True, 2.0
    adm("pump-x")
    time.sleep(0.2)
    assert adm("pump-9")
