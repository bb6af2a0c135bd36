"""Plugging the VIP and member networks: pure plans, interface definitions, applying them, nftables."""
