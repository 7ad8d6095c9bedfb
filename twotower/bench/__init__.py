"""Benchmarks (`twotower bench NAME`): the top layer, free to import every package."""
