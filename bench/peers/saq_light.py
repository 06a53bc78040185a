"""``saq-light``: saq in its lightest documented set-up (see saq_peer.py)."""

from __future__ import annotations

from bench.peers.saq_peer import SaqLightAdapter
from bench.workloads import driver

if __name__ == "__main__":
    raise SystemExit(driver.main(SaqLightAdapter()))
