"""The event streams' metrics, summed over every server process like the app's others."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge(
    "realtime_connections",
    "Open event stream connections, by transport (ws, sse).",
    ["transport"],
    multiprocess_mode="livesum",
)
SENT = Counter(
    "realtime_events_sent",
    "Events sent to clients (live and replayed), by transport.",
    ["transport"],
)
DROPPED = Counter(
    "realtime_events_dropped",
    "Events not sent because their connection was dropped as too slow, by transport.",
    ["transport"],
)
SLOW_DISCONNECTS = Counter(
    "realtime_slow_disconnects",
    "Connections dropped because more live events than allowed were queued behind them.",
    ["transport"],
)
PUBLISHED = Counter(
    "realtime_events_published",
    "Events published to the streams by this server, by path (commit, relay).",
    ["path"],
)
