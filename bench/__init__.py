"""stackshift's benchmark suite: stackshift, raw redis-py baselines and the peers.

``python -m bench`` runs it (see bench/README.md). Modules under
``bench.workloads`` and ``bench.peers`` are also imported inside the peers'
own virtualenvs, so they depend on the standard library and redis-py only.
"""
