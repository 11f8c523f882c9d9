"""What the parts of ClusterNode (its mixins, a module each) use of the node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


class NodePart:
    """Declares, for the type checker, what ClusterNode provides to its parts."""

    service: Any
    name: str

    if TYPE_CHECKING:

        @property
        def up(self) -> bool: ...
        def _publish(
            self, op: Any, claim: str | None = None, release: str | None = None, targets: str = "*"
        ) -> None: ...
