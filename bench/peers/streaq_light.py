"""``streaq-light``: streaq in its lightest documented set-up (see streaq_peer.py)."""

from __future__ import annotations

from bench.peers.streaq_peer import StreaqLightAdapter
from bench.workloads import driver

if __name__ == "__main__":
    raise SystemExit(driver.main(StreaqLightAdapter()))
