"""Listeners and the downstream protocol (HTTP/1.1), worker processes."""
