"""Imports every detector module so that each registers itself (order = report order)."""
