"""The contract of the existing ``octavia-prometheus-proxy``: which haproxy metrics become which octavia ones.

Data only. Each area renames a haproxy prefix to an Octavia prefix and its label keys (``proxy`` to
``listener`` or ``pool``, ``server`` to ``member``) and keeps the listed metrics; a few metrics get
another name, some get the proxy's own HELP text. A haproxy metric not listed here is dropped, as the
proxy drops it. ``tests/unit/test_metrics_names.py`` checks this against the proxy's table, entry by
entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Area:
    """One haproxy prefix: its Octavia prefix, the label keys renamed, the metric suffixes kept."""

    haproxy: str
    octavia: str
    labels: tuple[tuple[str, str], ...]
    kept: tuple[str, ...]


@dataclass(frozen=True)
class Rename:
    """What one haproxy metric becomes."""

    octavia: str
    help: str | None  # the proxy's own HELP text; None keeps haproxy's
    labels: tuple[tuple[str, str], ...]  # label keys renamed, (haproxy, octavia)


# fmt: off
AREAS = (
    Area(
        "haproxy_process_",
        "octavia_loadbalancer_",
        (),
        (
            "max_connections", "current_connections", "connections_total", "requests_total",
            "max_ssl_connections", "current_ssl_connections", "ssl_connections_total",
            "current_connection_rate", "limit_connection_rate", "max_connection_rate",
            "current_session_rate", "limit_session_rate", "max_session_rate", "current_ssl_rate",
            "limit_ssl_rate", "max_ssl_rate", "current_frontend_ssl_key_rate", "max_frontend_ssl_key_rate",
            "frontend_ssl_reuse", "current_backend_ssl_key_rate", "max_backend_ssl_key_rate",
            "ssl_cache_lookups_total", "ssl_cache_misses_total", "http_comp_bytes_in_total",
            "http_comp_bytes_out_total", "limit_http_comp", "listeners", "dropped_logs_total",
            "pool_allocated_bytes", "pool_used_bytes", "pool_failures_total",
        ),
    ),
    Area(
        "haproxy_frontend_",
        "octavia_listener_",
        (("proxy", "listener"),),
        (
            "status", "current_sessions", "max_sessions", "limit_sessions", "sessions_total",
            "limit_session_rate", "max_session_rate", "connections_rate_max", "connections_total",
            "bytes_in_total", "bytes_out_total", "requests_denied_total", "responses_denied_total",
            "request_errors_total", "denied_connections_total", "denied_sessions_total",
            "failed_header_rewriting_total", "http_requests_rate_max", "http_requests_total",
            "http_responses_total", "intercepted_requests_total", "http_cache_lookups_total",
            "http_cache_hits_total", "http_comp_bytes_in_total", "http_comp_bytes_out_total",
            "http_comp_bytes_bypassed_total", "http_comp_responses_total",
        ),
    ),
    Area(
        "haproxy_backend_",
        "octavia_pool_",
        (("proxy", "pool"),),
        (
            "status", "current_sessions", "max_sessions", "limit_sessions", "sessions_total",
            "max_session_rate", "last_session_seconds", "current_queue", "max_queue",
            "connection_attempts_total", "connection_reuses_total", "bytes_in_total", "bytes_out_total",
            "queue_time_average_seconds", "connect_time_average_seconds", "response_time_average_seconds",
            "total_time_average_seconds", "max_queue_time_seconds", "max_connect_time_seconds",
            "max_response_time_seconds", "max_total_time_seconds", "requests_denied_total",
            "responses_denied_total", "connection_errors_total", "response_errors_total",
            "retry_warnings_total", "redispatch_warnings_total", "failed_header_rewriting_total",
            "client_aborts_total", "server_aborts_total", "active_servers", "backup_servers",
            "check_up_down_total", "check_last_change_seconds", "downtime_seconds_total",
            "loadbalanced_total", "http_requests_total", "http_responses_total", "http_cache_lookups_total",
            "http_cache_hits_total", "http_comp_bytes_in_total", "http_comp_bytes_out_total",
            "http_comp_bytes_bypassed_total", "http_comp_responses_total",
        ),
    ),
    Area(
        "haproxy_server_",
        "octavia_member_",
        (("proxy", "pool"), ("server", "member")),
        (
            "status", "current_sessions", "max_sessions", "limit_sessions", "sessions_total",
            "max_session_rate", "last_session_seconds", "current_queue", "max_queue", "queue_limit",
            "bytes_in_total", "bytes_out_total", "queue_time_average_seconds",
            "connect_time_average_seconds", "response_time_average_seconds", "total_time_average_seconds",
            "max_queue_time_seconds", "max_connect_time_seconds", "max_response_time_seconds",
            "max_total_time_seconds", "connection_attempts_total", "connection_reuses_total",
            "responses_denied_total", "connection_errors_total", "response_errors_total",
            "retry_warnings_total", "redispatch_warnings_total", "failed_header_rewriting_total",
            "client_aborts_total", "server_aborts_total", "weight", "check_failures_total",
            "check_up_down_total", "downtime_seconds_total", "check_last_change_seconds",
            "current_throttle", "loadbalanced_total", "http_responses_total", "idle_connections_current",
            "idle_connections_limit",
        ),
    ),
)
# fmt: on

# Metrics whose Octavia name is not the area's prefix + the same suffix.
RENAMED = {
    "haproxy_process_pool_allocated_bytes": "octavia_memory_pool_allocated_bytes",
    "haproxy_process_pool_used_bytes": "octavia_memory_pool_used_bytes",
    "haproxy_process_pool_failures_total": "octavia_memory_pool_failures_total",
    "haproxy_backend_server_aborts_total": "octavia_pool_member_aborts_total",
    "haproxy_backend_active_servers": "octavia_pool_active_members",
    "haproxy_backend_backup_servers": "octavia_pool_backup_members",
}

# The proxy's own HELP texts, by Octavia name (every other family keeps haproxy's text).
HELP = {
    "octavia_memory_pool_allocated_bytes": "Total amount of memory allocated in the memory pools (in bytes).",
    "octavia_memory_pool_used_bytes": "Total amount of memory used in the memory pools (in bytes).",
    "octavia_memory_pool_failures_total": "Total number of failed memory pool allocations.",
    "octavia_loadbalancer_current_ssl_connections": "Number of active SSL connections.",
    "octavia_listener_status": "Current status of the listener.",
    "octavia_listener_denied_connections_total": "Total number of requests denied by connection rules.",
    "octavia_listener_denied_sessions_total": "Total number of requests denied by session rules.",
    "octavia_listener_failed_header_rewriting_total": "Total number of failed header rewriting rules.",
    "octavia_pool_status": "Current status of the pool.",
    "octavia_pool_last_session_seconds": "Number of seconds since last session assigned to a member.",
    "octavia_pool_max_response_time_seconds": "Maximum observed time spent waiting for a member response.",
    "octavia_pool_member_aborts_total": "Total number of data transfers aborted by the server.",
    "octavia_pool_active_members": "Current number of active members.",
    "octavia_pool_backup_members": "Current number of backup members.",
    "octavia_pool_downtime_seconds_total": "Total downtime (in seconds) for the pool.",
    "octavia_pool_loadbalanced_total": (
        "Total number of times a pool was selected, either for new sessions, or when redispatching."
    ),
    "octavia_member_status": "Current status of the member.",
    "octavia_member_last_session_seconds": "Number of seconds since last session assigned to the member.",
    "octavia_member_queue_limit": "Configured maxqueue for the member (0 meaning no limit).",
    "octavia_member_max_response_time_seconds": "Maximum observed time spent waiting for a member response.",
    "octavia_member_weight": "Member weight.",
    "octavia_member_check_failures_total": (
        "Total number of failed check (Only counts checks failed when the member is up)."
    ),
    "octavia_member_downtime_seconds_total": "Total downtime (in seconds) for the member.",
    "octavia_member_current_throttle": (
        "Current throttle percentage for the member, when slowstart is active, or no value if not in "
        "slowstart."
    ),
    "octavia_member_loadbalanced_total": (
        "Total number of times a member was selected, either for new sessions, or when redispatching."
    ),
}

# Samples of haproxy's internal frontend, backend and server for the PROMETHEUS listener are dropped
# (any line naming it, as the proxy does); the user-facing PROMETHEUS listener stays.
INTERNAL = "prometheus-exporter"


def _table() -> dict[str, Rename]:
    table: dict[str, Rename] = {}
    for area in AREAS:
        for suffix in area.kept:
            name = area.haproxy + suffix
            octavia = RENAMED.get(name, area.octavia + suffix)
            table[name] = Rename(octavia, HELP.get(octavia), area.labels)
    return table


METRICS: dict[str, Rename] = _table()  # haproxy name -> what it becomes
