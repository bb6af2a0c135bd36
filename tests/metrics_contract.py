"""The existing proxy's contract as a table the tests keep (``octavia/cmd/prometheus_proxy.py``).

Transcribed from the proxy's ``METRIC_MAP`` (Octavia, Apache-2.0): every haproxy metric it keeps, the
name it gives it, and the HELP text it prints instead of haproxy's (None: haproxy's own). Label keys
are renamed by the haproxy prefix (``LABELS``). The agent's own table (``amphora_agent.metrics.names``)
is written differently on purpose; the tests check both say the same.
"""

from __future__ import annotations

from collections.abc import Iterable

LABELS = {
    "haproxy_process_": {},
    "haproxy_frontend_": {"proxy": "listener"},
    "haproxy_backend_": {"proxy": "pool"},
    "haproxy_server_": {"proxy": "pool", "server": "member"},
}
INTERNAL = "prometheus-exporter"  # the proxy drops every line containing it
CPU_HELP = "Load balancer CPU utilization (percentage)."
MEMORY_HELP = "Load balancer memory utilization (percentage)."

# haproxy metric -> (octavia metric, the proxy's HELP text or None)
PROXY_MAP: dict[str, tuple[str, str | None]] = {
    "haproxy_process_pool_allocated_bytes": (
        "octavia_memory_pool_allocated_bytes",
        "Total amount of memory allocated in the memory pools (in bytes).",
    ),
    "haproxy_process_pool_used_bytes": (
        "octavia_memory_pool_used_bytes",
        "Total amount of memory used in the memory pools (in bytes).",
    ),
    "haproxy_process_pool_failures_total": (
        "octavia_memory_pool_failures_total",
        "Total number of failed memory pool allocations.",
    ),
    "haproxy_process_max_connections": ("octavia_loadbalancer_max_connections", None),
    "haproxy_process_current_connections": ("octavia_loadbalancer_current_connections", None),
    "haproxy_process_connections_total": ("octavia_loadbalancer_connections_total", None),
    "haproxy_process_requests_total": ("octavia_loadbalancer_requests_total", None),
    "haproxy_process_max_ssl_connections": ("octavia_loadbalancer_max_ssl_connections", None),
    "haproxy_process_current_ssl_connections": (
        "octavia_loadbalancer_current_ssl_connections",
        "Number of active SSL connections.",
    ),
    "haproxy_process_ssl_connections_total": ("octavia_loadbalancer_ssl_connections_total", None),
    "haproxy_process_current_connection_rate": ("octavia_loadbalancer_current_connection_rate", None),
    "haproxy_process_limit_connection_rate": ("octavia_loadbalancer_limit_connection_rate", None),
    "haproxy_process_max_connection_rate": ("octavia_loadbalancer_max_connection_rate", None),
    "haproxy_process_current_session_rate": ("octavia_loadbalancer_current_session_rate", None),
    "haproxy_process_limit_session_rate": ("octavia_loadbalancer_limit_session_rate", None),
    "haproxy_process_max_session_rate": ("octavia_loadbalancer_max_session_rate", None),
    "haproxy_process_current_ssl_rate": ("octavia_loadbalancer_current_ssl_rate", None),
    "haproxy_process_limit_ssl_rate": ("octavia_loadbalancer_limit_ssl_rate", None),
    "haproxy_process_max_ssl_rate": ("octavia_loadbalancer_max_ssl_rate", None),
    "haproxy_process_current_frontend_ssl_key_rate": (
        "octavia_loadbalancer_current_frontend_ssl_key_rate",
        None,
    ),
    "haproxy_process_max_frontend_ssl_key_rate": ("octavia_loadbalancer_max_frontend_ssl_key_rate", None),
    "haproxy_process_frontend_ssl_reuse": ("octavia_loadbalancer_frontend_ssl_reuse", None),
    "haproxy_process_current_backend_ssl_key_rate": (
        "octavia_loadbalancer_current_backend_ssl_key_rate",
        None,
    ),
    "haproxy_process_max_backend_ssl_key_rate": ("octavia_loadbalancer_max_backend_ssl_key_rate", None),
    "haproxy_process_ssl_cache_lookups_total": ("octavia_loadbalancer_ssl_cache_lookups_total", None),
    "haproxy_process_ssl_cache_misses_total": ("octavia_loadbalancer_ssl_cache_misses_total", None),
    "haproxy_process_http_comp_bytes_in_total": ("octavia_loadbalancer_http_comp_bytes_in_total", None),
    "haproxy_process_http_comp_bytes_out_total": ("octavia_loadbalancer_http_comp_bytes_out_total", None),
    "haproxy_process_limit_http_comp": ("octavia_loadbalancer_limit_http_comp", None),
    "haproxy_process_listeners": ("octavia_loadbalancer_listeners", None),
    "haproxy_process_dropped_logs_total": ("octavia_loadbalancer_dropped_logs_total", None),
    "haproxy_frontend_status": (
        "octavia_listener_status",
        "Current status of the listener.",
    ),
    "haproxy_frontend_current_sessions": ("octavia_listener_current_sessions", None),
    "haproxy_frontend_max_sessions": ("octavia_listener_max_sessions", None),
    "haproxy_frontend_limit_sessions": ("octavia_listener_limit_sessions", None),
    "haproxy_frontend_sessions_total": ("octavia_listener_sessions_total", None),
    "haproxy_frontend_limit_session_rate": ("octavia_listener_limit_session_rate", None),
    "haproxy_frontend_max_session_rate": ("octavia_listener_max_session_rate", None),
    "haproxy_frontend_connections_rate_max": ("octavia_listener_connections_rate_max", None),
    "haproxy_frontend_connections_total": ("octavia_listener_connections_total", None),
    "haproxy_frontend_bytes_in_total": ("octavia_listener_bytes_in_total", None),
    "haproxy_frontend_bytes_out_total": ("octavia_listener_bytes_out_total", None),
    "haproxy_frontend_requests_denied_total": ("octavia_listener_requests_denied_total", None),
    "haproxy_frontend_responses_denied_total": ("octavia_listener_responses_denied_total", None),
    "haproxy_frontend_request_errors_total": ("octavia_listener_request_errors_total", None),
    "haproxy_frontend_denied_connections_total": (
        "octavia_listener_denied_connections_total",
        "Total number of requests denied by connection rules.",
    ),
    "haproxy_frontend_denied_sessions_total": (
        "octavia_listener_denied_sessions_total",
        "Total number of requests denied by session rules.",
    ),
    "haproxy_frontend_failed_header_rewriting_total": (
        "octavia_listener_failed_header_rewriting_total",
        "Total number of failed header rewriting rules.",
    ),
    "haproxy_frontend_http_requests_rate_max": ("octavia_listener_http_requests_rate_max", None),
    "haproxy_frontend_http_requests_total": ("octavia_listener_http_requests_total", None),
    "haproxy_frontend_http_responses_total": ("octavia_listener_http_responses_total", None),
    "haproxy_frontend_intercepted_requests_total": ("octavia_listener_intercepted_requests_total", None),
    "haproxy_frontend_http_cache_lookups_total": ("octavia_listener_http_cache_lookups_total", None),
    "haproxy_frontend_http_cache_hits_total": ("octavia_listener_http_cache_hits_total", None),
    "haproxy_frontend_http_comp_bytes_in_total": ("octavia_listener_http_comp_bytes_in_total", None),
    "haproxy_frontend_http_comp_bytes_out_total": ("octavia_listener_http_comp_bytes_out_total", None),
    "haproxy_frontend_http_comp_bytes_bypassed_total": (
        "octavia_listener_http_comp_bytes_bypassed_total",
        None,
    ),
    "haproxy_frontend_http_comp_responses_total": ("octavia_listener_http_comp_responses_total", None),
    "haproxy_backend_status": (
        "octavia_pool_status",
        "Current status of the pool.",
    ),
    "haproxy_backend_current_sessions": ("octavia_pool_current_sessions", None),
    "haproxy_backend_max_sessions": ("octavia_pool_max_sessions", None),
    "haproxy_backend_limit_sessions": ("octavia_pool_limit_sessions", None),
    "haproxy_backend_sessions_total": ("octavia_pool_sessions_total", None),
    "haproxy_backend_max_session_rate": ("octavia_pool_max_session_rate", None),
    "haproxy_backend_last_session_seconds": (
        "octavia_pool_last_session_seconds",
        "Number of seconds since last session assigned to a member.",
    ),
    "haproxy_backend_current_queue": ("octavia_pool_current_queue", None),
    "haproxy_backend_max_queue": ("octavia_pool_max_queue", None),
    "haproxy_backend_connection_attempts_total": ("octavia_pool_connection_attempts_total", None),
    "haproxy_backend_connection_reuses_total": ("octavia_pool_connection_reuses_total", None),
    "haproxy_backend_bytes_in_total": ("octavia_pool_bytes_in_total", None),
    "haproxy_backend_bytes_out_total": ("octavia_pool_bytes_out_total", None),
    "haproxy_backend_queue_time_average_seconds": ("octavia_pool_queue_time_average_seconds", None),
    "haproxy_backend_connect_time_average_seconds": ("octavia_pool_connect_time_average_seconds", None),
    "haproxy_backend_response_time_average_seconds": ("octavia_pool_response_time_average_seconds", None),
    "haproxy_backend_total_time_average_seconds": ("octavia_pool_total_time_average_seconds", None),
    "haproxy_backend_max_queue_time_seconds": ("octavia_pool_max_queue_time_seconds", None),
    "haproxy_backend_max_connect_time_seconds": ("octavia_pool_max_connect_time_seconds", None),
    "haproxy_backend_max_response_time_seconds": (
        "octavia_pool_max_response_time_seconds",
        "Maximum observed time spent waiting for a member response.",
    ),
    "haproxy_backend_max_total_time_seconds": ("octavia_pool_max_total_time_seconds", None),
    "haproxy_backend_requests_denied_total": ("octavia_pool_requests_denied_total", None),
    "haproxy_backend_responses_denied_total": ("octavia_pool_responses_denied_total", None),
    "haproxy_backend_connection_errors_total": ("octavia_pool_connection_errors_total", None),
    "haproxy_backend_response_errors_total": ("octavia_pool_response_errors_total", None),
    "haproxy_backend_retry_warnings_total": ("octavia_pool_retry_warnings_total", None),
    "haproxy_backend_redispatch_warnings_total": ("octavia_pool_redispatch_warnings_total", None),
    "haproxy_backend_failed_header_rewriting_total": ("octavia_pool_failed_header_rewriting_total", None),
    "haproxy_backend_client_aborts_total": ("octavia_pool_client_aborts_total", None),
    "haproxy_backend_server_aborts_total": (
        "octavia_pool_member_aborts_total",
        "Total number of data transfers aborted by the server.",
    ),
    "haproxy_backend_active_servers": (
        "octavia_pool_active_members",
        "Current number of active members.",
    ),
    "haproxy_backend_backup_servers": (
        "octavia_pool_backup_members",
        "Current number of backup members.",
    ),
    "haproxy_backend_check_up_down_total": ("octavia_pool_check_up_down_total", None),
    "haproxy_backend_check_last_change_seconds": ("octavia_pool_check_last_change_seconds", None),
    "haproxy_backend_downtime_seconds_total": (
        "octavia_pool_downtime_seconds_total",
        "Total downtime (in seconds) for the pool.",
    ),
    "haproxy_backend_loadbalanced_total": (
        "octavia_pool_loadbalanced_total",
        "Total number of times a pool was selected, either for new sessions, or when redispatching.",
    ),
    "haproxy_backend_http_requests_total": ("octavia_pool_http_requests_total", None),
    "haproxy_backend_http_responses_total": ("octavia_pool_http_responses_total", None),
    "haproxy_backend_http_cache_lookups_total": ("octavia_pool_http_cache_lookups_total", None),
    "haproxy_backend_http_cache_hits_total": ("octavia_pool_http_cache_hits_total", None),
    "haproxy_backend_http_comp_bytes_in_total": ("octavia_pool_http_comp_bytes_in_total", None),
    "haproxy_backend_http_comp_bytes_out_total": ("octavia_pool_http_comp_bytes_out_total", None),
    "haproxy_backend_http_comp_bytes_bypassed_total": ("octavia_pool_http_comp_bytes_bypassed_total", None),
    "haproxy_backend_http_comp_responses_total": ("octavia_pool_http_comp_responses_total", None),
    "haproxy_server_status": (
        "octavia_member_status",
        "Current status of the member.",
    ),
    "haproxy_server_current_sessions": ("octavia_member_current_sessions", None),
    "haproxy_server_max_sessions": ("octavia_member_max_sessions", None),
    "haproxy_server_limit_sessions": ("octavia_member_limit_sessions", None),
    "haproxy_server_sessions_total": ("octavia_member_sessions_total", None),
    "haproxy_server_max_session_rate": ("octavia_member_max_session_rate", None),
    "haproxy_server_last_session_seconds": (
        "octavia_member_last_session_seconds",
        "Number of seconds since last session assigned to the member.",
    ),
    "haproxy_server_current_queue": ("octavia_member_current_queue", None),
    "haproxy_server_max_queue": ("octavia_member_max_queue", None),
    "haproxy_server_queue_limit": (
        "octavia_member_queue_limit",
        "Configured maxqueue for the member (0 meaning no limit).",
    ),
    "haproxy_server_bytes_in_total": ("octavia_member_bytes_in_total", None),
    "haproxy_server_bytes_out_total": ("octavia_member_bytes_out_total", None),
    "haproxy_server_queue_time_average_seconds": ("octavia_member_queue_time_average_seconds", None),
    "haproxy_server_connect_time_average_seconds": ("octavia_member_connect_time_average_seconds", None),
    "haproxy_server_response_time_average_seconds": ("octavia_member_response_time_average_seconds", None),
    "haproxy_server_total_time_average_seconds": ("octavia_member_total_time_average_seconds", None),
    "haproxy_server_max_queue_time_seconds": ("octavia_member_max_queue_time_seconds", None),
    "haproxy_server_max_connect_time_seconds": ("octavia_member_max_connect_time_seconds", None),
    "haproxy_server_max_response_time_seconds": (
        "octavia_member_max_response_time_seconds",
        "Maximum observed time spent waiting for a member response.",
    ),
    "haproxy_server_max_total_time_seconds": ("octavia_member_max_total_time_seconds", None),
    "haproxy_server_connection_attempts_total": ("octavia_member_connection_attempts_total", None),
    "haproxy_server_connection_reuses_total": ("octavia_member_connection_reuses_total", None),
    "haproxy_server_responses_denied_total": ("octavia_member_responses_denied_total", None),
    "haproxy_server_connection_errors_total": ("octavia_member_connection_errors_total", None),
    "haproxy_server_response_errors_total": ("octavia_member_response_errors_total", None),
    "haproxy_server_retry_warnings_total": ("octavia_member_retry_warnings_total", None),
    "haproxy_server_redispatch_warnings_total": ("octavia_member_redispatch_warnings_total", None),
    "haproxy_server_failed_header_rewriting_total": ("octavia_member_failed_header_rewriting_total", None),
    "haproxy_server_client_aborts_total": ("octavia_member_client_aborts_total", None),
    "haproxy_server_server_aborts_total": ("octavia_member_server_aborts_total", None),
    "haproxy_server_weight": (
        "octavia_member_weight",
        "Member weight.",
    ),
    "haproxy_server_check_failures_total": (
        "octavia_member_check_failures_total",
        "Total number of failed check (Only counts checks failed when the member is up).",
    ),
    "haproxy_server_check_up_down_total": ("octavia_member_check_up_down_total", None),
    "haproxy_server_downtime_seconds_total": (
        "octavia_member_downtime_seconds_total",
        "Total downtime (in seconds) for the member.",
    ),
    "haproxy_server_check_last_change_seconds": ("octavia_member_check_last_change_seconds", None),
    "haproxy_server_current_throttle": (
        "octavia_member_current_throttle",
        (
            "Current throttle percentage for the member, when slowstart is active, or no value if not in "
            "slowstart."
        ),
    ),
    "haproxy_server_loadbalanced_total": (
        "octavia_member_loadbalanced_total",
        "Total number of times a member was selected, either for new sessions, or when redispatching.",
    ),
    "haproxy_server_http_responses_total": ("octavia_member_http_responses_total", None),
    "haproxy_server_idle_connections_current": ("octavia_member_idle_connections_current", None),
    "haproxy_server_idle_connections_limit": ("octavia_member_idle_connections_limit", None),
}

# Every family queried by the Grafana dashboard Octavia ships (etc/grafana/OctaviaAmphoraDashboard.json).
DASHBOARD_FAMILIES = (
    "octavia_listener_bytes_in_total",
    "octavia_listener_bytes_out_total",
    "octavia_listener_connections_total",
    "octavia_listener_denied_connections_total",
    "octavia_listener_denied_sessions_total",
    "octavia_listener_http_cache_hits_total",
    "octavia_listener_http_cache_lookups_total",
    "octavia_listener_http_comp_responses_total",
    "octavia_listener_http_requests_rate_max",
    "octavia_listener_http_requests_total",
    "octavia_listener_http_responses_total",
    "octavia_listener_max_session_rate",
    "octavia_listener_max_sessions",
    "octavia_listener_request_errors_total",
    "octavia_listener_requests_denied_total",
    "octavia_listener_responses_denied_total",
    "octavia_listener_sessions_total",
    "octavia_listener_status",
    "octavia_loadbalancer_connections_total",
    "octavia_loadbalancer_cpu",
    "octavia_loadbalancer_current_backend_ssl_key_rate",
    "octavia_loadbalancer_current_connection_rate",
    "octavia_loadbalancer_current_frontend_ssl_key_rate",
    "octavia_loadbalancer_dropped_logs_total",
    "octavia_loadbalancer_frontend_ssl_reuse",
    "octavia_loadbalancer_http_comp_bytes_in_total",
    "octavia_loadbalancer_http_comp_bytes_out_total",
    "octavia_loadbalancer_max_connection_rate",
    "octavia_loadbalancer_max_connections",
    "octavia_loadbalancer_max_ssl_rate",
    "octavia_loadbalancer_memory",
    "octavia_loadbalancer_requests_total",
    "octavia_loadbalancer_ssl_cache_lookups_total",
    "octavia_loadbalancer_ssl_cache_misses_total",
    "octavia_loadbalancer_ssl_connections_total",
    "octavia_member_bytes_in_total",
    "octavia_member_bytes_out_total",
    "octavia_member_check_failures_total",
    "octavia_member_check_last_change_seconds",
    "octavia_member_check_up_down_total",
    "octavia_member_client_aborts_total",
    "octavia_member_connect_time_average_seconds",
    "octavia_member_connection_attempts_total",
    "octavia_member_connection_errors_total",
    "octavia_member_connection_reuses_total",
    "octavia_member_current_queue",
    "octavia_member_current_throttle",
    "octavia_member_downtime_seconds_total",
    "octavia_member_http_responses_total",
    "octavia_member_idle_connections_current",
    "octavia_member_loadbalanced_total",
    "octavia_member_max_connect_time_seconds",
    "octavia_member_max_queue",
    "octavia_member_max_queue_time_seconds",
    "octavia_member_max_response_time_seconds",
    "octavia_member_max_session_rate",
    "octavia_member_max_sessions",
    "octavia_member_max_total_time_seconds",
    "octavia_member_queue_time_average_seconds",
    "octavia_member_redispatch_warnings_total",
    "octavia_member_response_errors_total",
    "octavia_member_response_time_average_seconds",
    "octavia_member_responses_denied_total",
    "octavia_member_retry_warnings_total",
    "octavia_member_server_aborts_total",
    "octavia_member_sessions_total",
    "octavia_member_status",
    "octavia_member_total_time_average_seconds",
    "octavia_member_weight",
    "octavia_memory_pool_allocated_bytes",
    "octavia_memory_pool_failures_total",
    "octavia_memory_pool_used_bytes",
    "octavia_pool_active_members",
    "octavia_pool_backup_members",
    "octavia_pool_bytes_in_total",
    "octavia_pool_bytes_out_total",
    "octavia_pool_check_last_change_seconds",
    "octavia_pool_check_up_down_total",
    "octavia_pool_client_aborts_total",
    "octavia_pool_connect_time_average_seconds",
    "octavia_pool_connection_attempts_total",
    "octavia_pool_connection_errors_total",
    "octavia_pool_connection_reuses_total",
    "octavia_pool_current_queue",
    "octavia_pool_downtime_seconds_total",
    "octavia_pool_http_cache_hits_total",
    "octavia_pool_http_cache_lookups_total",
    "octavia_pool_http_comp_responses_total",
    "octavia_pool_http_requests_total",
    "octavia_pool_http_responses_total",
    "octavia_pool_max_connect_time_seconds",
    "octavia_pool_max_queue",
    "octavia_pool_max_queue_time_seconds",
    "octavia_pool_max_response_time_seconds",
    "octavia_pool_max_session_rate",
    "octavia_pool_max_sessions",
    "octavia_pool_max_total_time_seconds",
    "octavia_pool_member_aborts_total",
    "octavia_pool_queue_time_average_seconds",
    "octavia_pool_redispatch_warnings_total",
    "octavia_pool_requests_denied_total",
    "octavia_pool_response_errors_total",
    "octavia_pool_response_time_average_seconds",
    "octavia_pool_responses_denied_total",
    "octavia_pool_retry_warnings_total",
    "octavia_pool_sessions_total",
    "octavia_pool_status",
    "octavia_pool_total_time_average_seconds",
)


def _proxy_keys() -> dict[str, tuple[str, str | None, dict[str, str] | None]]:
    """The proxy's ``METRIC_MAP`` shape: ``"name "`` and ``"name{"`` keys, in the table's order."""
    keys: dict[str, tuple[str, str | None, dict[str, str] | None]] = {}
    for haproxy, (octavia, help_text) in PROXY_MAP.items():
        labels = next(v for p, v in LABELS.items() if haproxy.startswith(p))
        full_help = f"# HELP {octavia} {help_text}\n" if help_text else None
        keys[f"{haproxy} "] = (f"{octavia} ", full_help, None)
        if labels:
            keys[f"{haproxy}{{"] = (f"{octavia}{{", None, {f"{k}=": f"{v}=" for k, v in labels.items()})
    return keys


METRIC_MAP = _proxy_keys()


def proxy_rewrite(lines: Iterable[str]) -> str:
    """The proxy's ``do_GET`` loop over haproxy's lines, restated: substring matches, first key wins."""
    out = ""
    for line in lines:
        if INTERNAL in line:
            continue
        match = next((key for key in METRIC_MAP if key in line), None)
        if match is None:
            continue
        new, help_line, labels = METRIC_MAP[match]
        if help_line and "HELP" in line:
            out += help_line
            continue
        if labels and not line.startswith("#"):
            for old, replacement in labels.items():
                line = line.replace(old, replacement)
        out += line.replace(match, new)
    return out
