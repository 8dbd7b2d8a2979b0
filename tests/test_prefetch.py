"""`abproxy.prefetch`: the libraries a pass calls are imported in a thread as the job starts, chosen from
the configuration (statsmodels only for segments or secondary metrics), never twice."""
from __future__ import annotations

import subprocess
import sys

from abproxy import prefetch
from abproxy.config import parse_config

METRICS = {"spend": {"type": "mean", "event": "purchase", "aggregate": "sum"},
           "buyer": {"type": "proportion", "event": "purchase"}}
ARMS = {"control": "control", "variants": {"control": {}, "treatment": {}}}


def _config(**experiment):
    return parse_config({"metrics": METRICS, "experiments": {"a": {**ARMS, "primary": ["spend"], **experiment}}})


def test_libraries_follow_what_the_pass_calls():
    assert prefetch.libraries(_config(), ["a"]) == prefetch.ALWAYS
    for extra in ({"segments": ["country"]}, {"secondary": ["buyer"]}):
        assert prefetch.libraries(_config(**extra), ["a"]) == prefetch.ALWAYS + prefetch.STATSMODELS
    assert prefetch.libraries(_config(), []) == ()


def test_start_imports_in_a_thread_only_what_is_missing():
    assert prefetch.start(["json", "sys"]) is None          # loaded: no thread
    code = ("import sys\nfrom abproxy import prefetch\nassert not {'colorsys', 'wave'} & set(sys.modules)\n"
            "t = prefetch.start(['colorsys'])\nt.join()\nu = prefetch.start(['no_such_module_abc', 'wave'])\nu.join()\n"
            "print(t.name, t.daemon, 'colorsys' in sys.modules, 'wave' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["abproxy-prefetch", "False", "True", "False"]   # a failed import stops the thread quietly
