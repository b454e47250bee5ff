"""Attention metadata (built once per step) and the paged attention layer."""
