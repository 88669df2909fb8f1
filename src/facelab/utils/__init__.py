"""Shared helpers: the one home for small utilities used across packages."""
