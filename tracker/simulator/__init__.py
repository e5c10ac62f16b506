"""A simulated OpenAI-compatible API: Assistants threads, runs and run steps, background responses, batches and
fine-tuning jobs, whose lifecycles are seeded and replayable, served over HTTP on loopback with optional
faults, for ``tracker sync``, the tests and benchmarks.

The core (:mod:`~tracker.simulator.model` and the modules of each kind) is pure and driven by an injected
clock; :mod:`~tracker.simulator.server` is the HTTP edge. See docs/simulator.md.
"""

from __future__ import annotations

from tracker.simulator.clocks import ManualClock, SimulatedClock
from tracker.simulator.faults import Faults, Trigger
from tracker.simulator.model import PopulatedIds, World
from tracker.simulator.server import SimulatorServer

__all__ = ["Faults", "ManualClock", "PopulatedIds", "SimulatedClock", "SimulatorServer", "Trigger", "World"]
