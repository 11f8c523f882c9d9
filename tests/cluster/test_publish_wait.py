"""How long a node waits before it publishes, on a fake reactor clock (the times are
around 1.7e9 seconds: sub-microsecond float error)."""

from __future__ import annotations

import pytest

from chatserver.cluster.node import ClusterNode
from tests.support.memstore import make_service


def waits(last_pump_ahead: float, interval: float = 0.002) -> list[float]:
    """The delays of the publishes a node schedules when its last publish seems to be
    ``last_pump_ahead`` seconds from now (negative: in the past)."""
    service = make_service()
    clock = service.clock
    node = ClusterNode(
        service,
        url="redis://127.0.0.1:1/0",
        node="a",
        lease=10.0,
        prefix="t",
        reactor=clock,
        cloak_check="x",
        publish_interval=interval,
    )
    node._last_pump = clock.seconds() + last_pump_ahead
    node._schedule()
    return [
        call.getTime() - clock.seconds()
        for call in clock.getDelayedCalls()
        if call.func == node._pump
    ]


def test_the_first_publish_after_a_quiet_spell_goes_at_once() -> None:
    assert waits(-1.0) == [0.0]


def test_a_publish_soon_after_the_last_waits_for_the_rest_of_the_interval() -> None:
    assert waits(-0.0005) == [pytest.approx(0.0015, abs=1e-6)]


def test_a_wall_clock_step_back_never_makes_a_publish_wait_longer_than_the_interval() -> None:
    # The reactor's clock follows the wall clock: stepped back an hour since the last
    # publish, that publish seems to lie an hour ahead.
    assert waits(3600.0) == [pytest.approx(0.002, abs=1e-6)]
