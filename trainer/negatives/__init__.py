"""Negative sources: each yields candidates with a correction rule for one shared loss."""
