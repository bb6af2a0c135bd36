"""Test and demo infrastructure: namespaces playing amphorae, VRRP pairs, configs in the controller's shape.

Never shipped: the wheel holds only what runs on an amphora or in an operator's shell.
"""
