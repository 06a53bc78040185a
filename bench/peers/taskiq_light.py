"""``taskiq-light``: taskiq in its lightest documented set-up (see taskiq_peer.py)."""

from __future__ import annotations

from bench.peers.taskiq_peer import TaskiqLightAdapter
from bench.workloads import driver

if __name__ == "__main__":
    raise SystemExit(driver.main(TaskiqLightAdapter()))
