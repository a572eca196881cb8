"""Stages wired over a run directory."""
