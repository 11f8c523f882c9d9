from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.app.helpers import Process


@pytest.fixture
def spawn() -> Iterator[Callable[..., Process]]:
    """Start a subprocess (see helpers.Process); anything still running at the end is killed."""
    started: list[Process] = []

    def start(*args: Any, **kwargs: Any) -> Process:
        process = Process(*args, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
