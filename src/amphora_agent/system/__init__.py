"""Adapters to the host: files, processes, namespaces and haproxy. Nothing here imports a service."""
