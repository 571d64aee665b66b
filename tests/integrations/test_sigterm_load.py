"""SIGTERM under load, in real servers: no task a client was told about is lost.

uvicorn (asyncio) and hypercorn with its trio worker serve
``apps/load_app.py`` on 127.0.0.1. A bounded httpx load (200 requests, 20 at a
time) makes every request spawn a task (quick, long-running, failing, or sync
in a thread) and answer its id; SIGTERM arrives when half of the requests have
answers. Then the app's JSON log must hold exactly one terminal line for
every task id a client received (long ones cancelled with reason
``shutdown``), the supervisor's shutdown totals must add up, and the server
must exit within the shutdown timeout plus a small bound.
"""

from __future__ import annotations

from collections import Counter

import pytest

from .conftest import APPS, EXIT_BOUND, ServeFactory, app_servers, events, outcomes

pytest.importorskip("httpx")

from ._load import Load

SHUTDOWN_TIMEOUT = 1.0
KINDS = ("quick", "long", "fail", "quick", "sync")
EXPECTED = {
    "quick": "task:succeeded",
    "long": "task:cancelled",
    "fail": "task:failed",
    "sync": "task:succeeded",
}


_uvicorn, _hypercorn_trio = app_servers("load_app:app")


@pytest.mark.parametrize(
    ("server_name", "command"),
    [
        pytest.param("uvicorn", _uvicorn, id="uvicorn-asyncio"),
        pytest.param("hypercorn", _hypercorn_trio, id="hypercorn-trio"),
    ],
)
def test_sigterm_mid_load_loses_no_task(
    serve: ServeFactory, server_name: str, command: object
) -> None:
    """Every task id a client got has exactly one terminal line; exit is bounded."""
    pytest.importorskip(server_name)
    if server_name == "hypercorn":
        pytest.importorskip("trio")
    server = serve(
        command,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        env={"PYTHONPATH": str(APPS)},
    )
    load = Load(server.url, total=200, concurrency=20, kinds=KINDS)
    load.start()
    assert load.answered.wait(30), f"no answers from the server:\n{server.output()}"
    seconds = server.terminate(timeout=SHUTDOWN_TIMEOUT + 15)
    load.join(30)

    assert load.task_ids, "no task was spawned before SIGTERM"
    records = server.records()
    by_id = outcomes(records)
    missing = [t for t in load.task_ids if t not in by_id]
    assert not missing, f"{len(missing)} task ids have no terminal line: {missing[:5]}"
    for task_id, lines in by_id.items():
        assert len(lines) == 1, f"{task_id} has {len(lines)} terminal lines: {lines}"
    for task_id, kind in load.task_ids.items():
        (line,) = by_id[task_id]
        if kind in {"quick", "sync"}:
            # Quick work may still be cut off by the deadline only if it had
            # not even started; normally it has finished long before.
            assert line["event"] in ("task:succeeded", "task:cancelled"), line
        else:
            assert line["event"] == EXPECTED[kind], line
        if line["event"] == "task:cancelled":
            assert line["reason"] == "shutdown", line
        if line["event"] == "task:failed":
            assert line["error_type"] == "ValueError"

    (shutdown,) = events(records, "supervisor:shutdown")
    ended = Counter(lines[0]["event"] for lines in by_id.values())
    totals = {k: shutdown[k] for k in ("spawned", "succeeded", "failed", "cancelled")}
    assert totals == {
        "spawned": len(by_id),
        "succeeded": ended["task:succeeded"],
        "failed": ended["task:failed"],
        "cancelled": ended["task:cancelled"],
    }
    assert shutdown["spawned"] >= len(load.task_ids)
    assert seconds < SHUTDOWN_TIMEOUT + EXIT_BOUND, server.output()
