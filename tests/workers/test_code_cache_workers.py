"""Process mode: a worker's compiled-entry cache never outlives a source change, and no call
sees anything an earlier call left (each gets a fresh instance, whichever worker is warm)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.workers.conftest import MakePool, MakeRequest

COUNTER = """
import json

_seen = getattr(json, "_bastion_calls", 0) + 1
json._bastion_calls = _seen  # a module of the snapshot: it would survive a reused instance


def run() -> int:
    return _seen
"""


def test_a_worker_runs_the_changed_source(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(1)
    entry = pyskill("edited", "def run() -> str:\n    return 'one'\n")
    for _ in range(3):  # a miss, then the worker's cached code (filled while prewarming)
        assert json.loads(pool.run(request_for(entry))) == "one"
    entry.write_text("def run() -> str:\n    return 'two'\n")
    for _ in range(3):
        assert json.loads(pool.run(request_for(entry))) == "two"


def test_two_skills_in_one_worker_never_share_code(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(1)
    a = pyskill("alpha", "def run() -> str:\n    return 'alpha'\n")
    b = pyskill("beta", "def run() -> str:\n    return 'beta'\n")
    for _ in range(4):
        assert json.loads(pool.run(request_for(a, skill="same"))) == "alpha"
        assert json.loads(pool.run(request_for(b, skill="same"))) == "beta"


def test_no_call_sees_state_left_by_an_earlier_one(
    make_pool: MakePool, pyskill: Callable[[str, str], Path], request_for: MakeRequest
) -> None:
    pool = make_pool(2)
    entry = pyskill("counter", COUNTER)
    seen = [json.loads(pool.run(request_for(entry))) for _ in range(12)]
    assert seen == [1] * 12
