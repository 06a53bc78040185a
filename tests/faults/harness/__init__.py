"""Fault-injection harness: effects ledger, fault proxy, invariant checker,
seeded chaos, worker/enqueuer processes and the job app they run."""
