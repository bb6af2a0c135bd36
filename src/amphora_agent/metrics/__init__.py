"""Prometheus metrics of PROMETHEUS listeners: haproxy's exporter in Octavia's terms, plus IPVS.

See docs/metrics.md.
"""
