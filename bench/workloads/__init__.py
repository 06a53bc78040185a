"""Workload definitions shared by the orchestrator and every system's driver."""
