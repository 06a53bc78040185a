"""Drivers for stackshift and the raw redis-py baselines (the project's venv)."""
