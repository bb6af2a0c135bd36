"""Small standard-library scripts keepalived runs by path (health checks)."""
