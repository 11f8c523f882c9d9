"""Running a benchmark script of ``bench/`` as a test does: its own interpreter, from the
project's root, its output kept for the failure message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``bench/<name>`` with ``args``, within ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
