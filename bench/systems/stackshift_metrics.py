"""stackshift with Prometheus metrics on (``--systems stackshift,stackshift-metrics``):
the same app, jobs and ``stackshift worker`` command line as the stackshift
system, so a run compares metrics on and off cell by cell."""

from __future__ import annotations

from bench.systems.stackshift_system import StackshiftAdapter
from bench.workloads import driver


class StackshiftMetricsAdapter(StackshiftAdapter):
    name = "stackshift-metrics"
    module = "bench.systems.stackshift_metrics"
    app_path = "bench.apps.stackshift_metrics_app:app"


if __name__ == "__main__":
    raise SystemExit(driver.main(StackshiftMetricsAdapter()))
