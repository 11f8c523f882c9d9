"""The hostile battery.  ``pytest tests/hostile --long`` (or ``HOSTILE_LONG=1`` with any
pytest command line) runs millions of generated cases instead of thousands.  The count of
cases per protocol is printed at the end (and kept in the pytest cache under
``hostile/cases``); ``-v`` adds the bystanders' latency during each test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile.clients import close_all
from tests.hostile.harness import CASES, NOTES, OVERALL, WINDOWS, Env


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="hostile battery: run millions of generated cases (hours), not thousands",
    )


def long_mode(config: pytest.Config) -> bool:
    # The option exists only when this file was loaded at start-up (pytest tests/hostile
    # --long); HOSTILE_LONG=1 works from anywhere.
    return bool(config.getoption("--long", default=False)) or os.environ.get(
        "HOSTILE_LONG", ""
    ) not in ("", "0")


# Long mode multiplies the generated cases by this: over a million per protocol (about an
# hour on a 2-core machine), against some four thousand in CI.
LONG_SCALE = 250


@pytest.fixture(scope="session")
def scale(pytestconfig: pytest.Config) -> int:
    """Multiplier of generated cases: 1 in CI, LONG_SCALE in long mode."""
    return LONG_SCALE if long_mode(pytestconfig) else 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not long_mode(config):
        return
    # The suite's per-test timeout is for CI runs; a long run takes hours.
    here = str(config.rootpath / "tests" / "hostile")
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.timeout(0))


@pytest.fixture
def guard(env: Env, request: pytest.FixtureRequest) -> Iterator[Env]:
    """Around every test: the bystanders' window, then the invariants (see Env.check)."""
    env.mark()
    yield env
    close_all()
    window = env.bystanders.report()
    WINDOWS.append((request.node.nodeid, window, env.peak_kb() if env.alive() else 0))
    env.check(window)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not CASES:
        return
    if config.getoption("verbose") > 0:
        terminalreporter.write_sep("-", "hostile battery: bystanders during each test")
        for nodeid, window, peak in WINDOWS:
            terminalreporter.write_line(
                f"{nodeid}: {window.summary()}; server peak {peak // 1024} MiB"
            )
    for protocol, overall, baseline in OVERALL:
        terminalreporter.write_line(
            f"hostile {protocol}: bystanders {overall.summary()}; quiet baseline {baseline.summary()}"
        )
    for note in NOTES:
        terminalreporter.write_line(f"hostile: {note}")
    total = sum(CASES.values())
    parts = ", ".join(f"{proto} {n}" for proto, n in sorted(CASES.items()))
    terminalreporter.write_sep("-", f"hostile battery: {total} cases ({parts})")
    cache = getattr(config, "cache", None)
    if cache is not None:
        cache.set("hostile/cases", dict(CASES))
