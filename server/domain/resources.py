"""What a step may use of a machine: CPUs, memory and GPUs.

A step's :class:`Resources` come from its executable's ``ai.sap.com/resourcePlan``
(through the plan table) or from the template's own ``resources``; step runners apply
them (the container runner as engine limits, the Ray runner as entrypoint resources).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resources:
    """Limits for one step; ``None`` in a field means no limit of that kind."""

    cpus: float | None = None
    memory_bytes: int | None = None
    gpus: int = 0
