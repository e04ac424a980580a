"""The garbage collector's settings for a started server (server/collector.py), checked in
a process of its own (pytest's must keep its own settings): start-up's objects frozen, its
garbage freed first, later cycles still collected."""

from __future__ import annotations

import subprocess
import sys

from tests.server_process import ROOT

_CHECK = """
import gc, weakref
from server.collector import YOUNGEST_GENERATION_THRESHOLD, settle_after_start

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

before = cycle()  # start-up's garbage: freed by the collection before the freeze
settle_after_start()
assert before() is None, "garbage from before the freeze was frozen"
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
assert gc.get_threshold()[0] == YOUNGEST_GENERATION_THRESHOLD
after = cycle()
gc.collect()
assert after() is None, "a cycle made after the freeze was not collected"
print("ok")
"""


def test_the_collector_is_settled_after_start() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHECK], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
