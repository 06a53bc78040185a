"""``arq-light``: arq in its lightest documented set-up (see arq_peer.py)."""

from __future__ import annotations

from bench.peers.arq_peer import ArqLightAdapter
from bench.workloads import driver

if __name__ == "__main__":
    raise SystemExit(driver.main(ArqLightAdapter()))
