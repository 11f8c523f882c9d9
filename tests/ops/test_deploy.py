"""The deploy/ files: the systemd unit verifies, the container installs and runs like the README."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatserver.cli import _parser
from tests.ops.helpers import REPO

DEPLOY = REPO / "deploy"


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: .ci/run installs the systemd package")
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "chatserver.service").read_text()
    # verify checks that ExecStart's program exists: point it at this checkout's command.
    program = Path(sys.executable).with_name("chatserver")
    assert program.exists(), program
    local = unit.replace("/usr/local/bin/chatserver", str(program))
    assert local != unit
    path = tmp_path / "chatserver.service"
    path.write_text(local)
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    # Messages about other units of this machine are not ours to judge.
    ours = [line for line in result.stderr.splitlines() if "chatserver.service" in line]
    assert result.returncode == 0 and not ours, result.stderr


def test_systemd_unit_reloads_with_sighup() -> None:
    unit = (DEPLOY / "chatserver.service").read_text()
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit


def test_containerfile_installs_like_the_readme_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    runs = [line for line in lines if line.startswith("RUN ")]
    assert any(re.match(r"RUN pip install \.( |$)", run) for run in runs), runs
    assert "pip install ." in (REPO / "README.md").read_text()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    # The last USER comes after the install and before the command.
    last_user = max(i for i, line in enumerate(lines) if line.startswith("USER "))
    install = max(i for i, line in enumerate(lines) if line.startswith("RUN pip install"))
    command = max(i for i, line in enumerate(lines) if line.startswith("CMD "))
    assert install < last_user < command
    assert f"--uid 10001 --home-dir /data --shell /usr/sbin/nologin {users[-1]}" in text


def test_container_health_check_is_the_health_command() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    check = text.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    argv = json.loads(check.split("CMD", 1)[1].strip().splitlines()[0])
    assert argv[0] == "chatserver"
    assert _parser().parse_args(argv[1:]).command == "health"
