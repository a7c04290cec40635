"""Active health checks: probe instances once per gateway and share the results with every worker.

``probe`` checks one instance; ``Prober`` schedules the checks of a whole config and applies the
thresholds; the ``Board`` (shared memory) carries the results from the one prober process to all
the workers; ``EndpointSink`` applies them directly when a gateway runs in a single process.
"""

from portway.health.board import MAX_SLOTS, Board, BoardReader
from portway.health.probe import ProbeResult, probe
from portway.health.prober import Prober
from portway.health.sinks import BoardSink, EndpointSink, HealthSink
from portway.health.state import Change, HasEndpoints, HealthState, Layout

__all__ = [
    "MAX_SLOTS",
    "Board",
    "BoardReader",
    "BoardSink",
    "Change",
    "EndpointSink",
    "HasEndpoints",
    "HealthSink",
    "HealthState",
    "Layout",
    "ProbeResult",
    "Prober",
    "probe",
]
