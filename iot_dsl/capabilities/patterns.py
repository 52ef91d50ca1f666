"""The patterns capability: workflow sections -> IR nodes, type checks and operators. (Being built.)"""

from __future__ import annotations

from ..ir import Workflow
from . import Capability

__all__ = ["CAPABILITY"]


def build(workflow: Workflow) -> None:
    """Add this capability's nodes to the workflow graph."""


CAPABILITY = Capability(name="patterns", sections=("patterns",), build=build)
