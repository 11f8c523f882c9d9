"""The cluster echo benchmark (bench/cluster_echo.py) with tiny counts, against real servers
and a private Redis: every probe's echo comes back and every background message reaches
every member, on one process and on two nodes.  No timing thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.scripts import run_script
from tests.support.redis import BINARY, MISSING_REASON


@pytest.mark.timeout(300)
@pytest.mark.skipif(BINARY is None, reason=MISSING_REASON)
def test_every_echo_and_delivery_arrives(tmp_path: Path) -> None:
    results = tmp_path / "echo.json"
    proc = run_script(
        "cluster_echo.py",
        *("--count", "10", "--warmup", "2", "--probes", "2", "--rooms", "4"),
        *("--members", "4", "--rate", "200", "--json", str(results)),
        timeout=280,
    )
    assert results.exists(), f"no results:\n{proc.stdout}\n{proc.stderr}"
    runs = json.loads(results.read_text())["runs"]
    assert [run["label"] for run in runs] == ["one process", "two nodes"]
    for run in runs:
        label = run["label"]
        assert run["echoes"] == run["expected_echoes"] == 20, label
        assert 0 < run["median_ms"] <= run["p90_ms"] <= run["p99_ms"] <= run["max_ms"], label
        assert run["sent"] > 0, label
        assert run["deliveries"] == run["expected_deliveries"] > 0, label
    assert proc.returncode == 0, proc.stdout + proc.stderr
