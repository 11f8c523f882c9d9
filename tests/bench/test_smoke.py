"""The benchmark's smoke mode against the real server: the load generator builds, every
scenario runs, and every message reaches every member exactly once.

No timing thresholds here: throughput only has to be above zero.  The full comparison with
the reference servers is `make bench` (bench/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.scripts import run_script


@pytest.mark.timeout(300)
def test_smoke_counts_every_delivery_once(tmp_path: Path) -> None:
    results = tmp_path / "smoke.json"
    proc = run_script(
        "run.py", "--smoke", "--json", str(results), "--keep", str(tmp_path), timeout=280
    )
    assert results.exists(), f"no results:\n{proc.stdout}\n{proc.stderr}"
    runs = json.loads(results.read_text())["runs"]
    assert {run["label"].split()[0] for run in runs} == {"fan-out", "mixed", "slow"}
    assert {run["server"] for run in runs} == {"chatserver"}
    for run in runs:
        label = run["label"]
        assert run["error"] is None, f"{label}: {run['error']}"
        done = run["done"]
        assert done["lost"] == 0, label
        assert done["duplicates"] == 0, label
        assert done["misrouted"] == 0, label
        assert done["bad"] == 0, label
        assert done["completed"] == done["messages"] > 0, label
        assert done["deliveries"] == done["expected_deliveries"] > 0, label
        assert done["deliveries_per_s"] > 0, label
    mixed = next(run for run in runs if run["label"].startswith("mixed"))
    assert mixed["label"] == "mixed irc+line+xmpp"
    assert proc.returncode == 0, proc.stderr
