"""``raw-jobs``: the raw loop with one awaited round trip per job (see raw.py)."""

from __future__ import annotations

from bench.systems.raw import RawJobsAdapter
from bench.workloads import driver

if __name__ == "__main__":
    raise SystemExit(driver.main(RawJobsAdapter()))
