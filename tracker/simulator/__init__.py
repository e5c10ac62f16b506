"""A simulated OpenAI-compatible Assistants API: threads, runs and run steps whose lifecycles are seeded and
replayable, served over HTTP on loopback with optional faults, for ``tracker sync``, the tests and benchmarks.

The core (:mod:`~tracker.simulator.model`, :mod:`~tracker.simulator.timeline`) is pure and driven by an
injected clock; :mod:`~tracker.simulator.server` is the HTTP edge. See docs/simulator.md.
"""

from __future__ import annotations

from tracker.simulator.faults import Faults, Trigger
from tracker.simulator.model import ManualClock, SimulatedClock, World
from tracker.simulator.server import SimulatorServer

__all__ = ["Faults", "ManualClock", "SimulatedClock", "SimulatorServer", "Trigger", "World"]
