"""The garbage-collector policy (cds_hooks/gc_policy.py): off while request or batch work runs, back on after,
thread-safe, and what the work leaves in reference cycles is still collected (memory stays bounded)."""
from __future__ import annotations

import gc
import threading
import weakref

import pytest

from cds_hooks.gc_policy import collector_paused


class Node:
    """An object that can be put in a reference cycle and watched with a weak reference."""


def _cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_off_inside_and_back_on_after():
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_nested_blocks_turn_it_back_on_only_at_the_end():
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_back_on_after_an_exception():
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the work failed")
    assert gc.isenabled()


def test_a_caller_that_turned_it_off_keeps_it_off():
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_blocks_in_threads():
    entered, release = threading.Event(), threading.Event()
    seen = []

    def other():
        with collector_paused():
            entered.set()
            release.wait(10)
        seen.append(gc.isenabled())

    thread = threading.Thread(target=other)
    thread.start()
    assert entered.wait(10)
    with collector_paused():
        pass
    assert not gc.isenabled(), "the other thread's block is still running"
    release.set()
    thread.join(10)
    assert gc.isenabled()
    assert seen == [True]


def test_cycles_left_by_the_work_are_collected_after_the_block():
    with collector_paused():
        ref = _cycle()
    assert ref() is not None  # not yet: reference counting cannot free a cycle
    gc.collect(0)             # what the next automatic generation-0 collection does
    assert ref() is None


def test_a_long_overlapping_stretch_collects_its_own_cycles():
    """Blocks that overlap without a gap (a busy threaded server) still free cycles: memory stays bounded."""
    with collector_paused():               # another request, still running
        with collector_paused(max_pause_s=0.0):
            ref = _cycle()
        assert not gc.isenabled()
        assert ref() is None


def test_a_request_runs_with_the_collector_off(tmp_path):
    from flask import Blueprint, jsonify

    from cds_hooks.service.app import create_app
    from cds_hooks.settings import Settings

    probe = Blueprint("probe", __name__)
    probe.add_url_rule("/probe", "probe", lambda: jsonify(collector=gc.isenabled()))
    settings = Settings.from_env({"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path)})
    client = create_app(settings, [probe]).test_client()
    assert client.get("/probe").get_json() == {"collector": False}
    assert gc.isenabled()
    assert client.get("/healthz").status_code == 200
    assert gc.isenabled()
