"""Adapters: each wraps one outside library and translates at the boundary to the domain."""
