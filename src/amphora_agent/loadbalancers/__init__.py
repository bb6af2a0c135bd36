"""Load balancers: one haproxy per load balancer, its stored config, tenant certificates."""
