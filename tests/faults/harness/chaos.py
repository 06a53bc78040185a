"""Seeded chaos: every random choice of a scenario comes from one seed.

The seed is printed when the scenario starts and attached to its report when
it fails; ``STACKSHIFT_FAULT_SEED=<seed>`` replays the same schedule.
"""

from __future__ import annotations

import os
import random

ENV = "STACKSHIFT_FAULT_SEED"


def seed_from_env() -> int:
    given = os.environ.get(ENV)
    if given:
        return int(given)
    return random.SystemRandom().randrange(1, 2**32)


class Chaos(random.Random):
    """A ``random.Random`` that remembers its seed."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.seed_value = seed

    def replay_hint(self) -> str:
        return f"chaos seed {self.seed_value} (replay: {ENV}={self.seed_value})"
