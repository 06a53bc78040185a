"""What a running attempt writes: recorded steps (checkpoint.lua) and durable
counters (increment.lua)."""

from __future__ import annotations

from .base import StoreBase
from .keys import GROUP, key_part
from .records import Lease, as_str, confirmed, mapped_errors


class StepStore(StoreBase):
    async def checkpoint(
        self, lease: Lease, step_key: str, record: bytes
    ) -> tuple[str, bytes | None]:
        """Record a step: ('ok', None), ('exists', first record) or ('lost', None)."""
        if not await confirmed(lease):
            return "lost", None
        q = self.keys.queue(lease.queue)
        reply = await self._call(
            "checkpoint",
            [q.stream, q.steps(lease.run_id)],
            [GROUP, lease.consumer, lease.entry_id, lease.deliveries, step_key, record],
        )
        return as_str(reply[0]), (reply[1] if len(reply) > 1 else None)

    async def increment(
        self, key: str, by: int, seq: int, run_id: str
    ) -> tuple[bool, int]:
        """Apply increment number ``seq`` of ``run_id`` once; (applied, value)."""
        part = key_part(key, "counter key")
        original = key if part != key else ""
        mark_ttl = int(max(self.settings.dead_ttl, self.settings.result_ttl) * 1000)
        reply = await self._call(
            "increment",
            [self.keys.counter(key), self.keys.counter_seen(key, run_id)],
            [by, seq, mark_ttl, original],
        )
        if key not in self._registered_counters:  # once per key and process
            with mapped_errors("register counter"):
                await self.client.sadd(self.keys.registry("counters"), key)
            self._registered_counters.add(key)
        return bool(int(reply[0])), int(reply[1])

    async def counter_value(self, key: str) -> int:
        with mapped_errors("state.get"):
            value = await self.client.hget(self.keys.counter(key), "value")
        return int(value) if value is not None else 0
