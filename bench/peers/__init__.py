"""Drivers for the peers; each runs inside its own virtualenv (bench/.venvs/<peer>)."""
