"""Key names: validation, hashing of free text, one hash slot per queue."""

from __future__ import annotations

import time

import pytest
from redis.crc import key_slot

from stackshift.errors import InvalidNameError
from stackshift.store.keys import Keys, check_name, key_part, new_run_id, queue_of_run


@pytest.mark.parametrize("name", ["emails", "a", "x" * 64, "Q_1.b-c"])
def test_valid_names_are_accepted(name: str) -> None:
    assert check_name(name, "queue") == name


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "a b", "{q}", "a:b", "*", "q?", "[q]", "é", "a\nb", None, 3]
)
def test_invalid_names_are_refused_with_a_clear_error(name: object) -> None:
    with pytest.raises(InvalidNameError, match="invalid queue name"):
        check_name(name, "queue")


def test_safe_free_text_enters_keys_as_is() -> None:
    assert key_part("verify:user_123", "key") == "verify:user_123"


@pytest.mark.parametrize(
    "text", ["has space", "{tag}", "glob*", "q?", "[x]", "a" * 101, "h:x"]
)
def test_unsafe_free_text_is_hashed(text: str) -> None:
    part = key_part(text, "key")
    assert part.startswith("h:") and len(part) == 2 + 64
    assert key_part(text, "key") == part  # stable


def test_free_text_over_1024_characters_is_refused() -> None:
    with pytest.raises(InvalidNameError, match="limit is 1024"):
        key_part("a" * 1025, "idempotency key")


def test_every_key_of_a_queue_is_in_one_hash_slot() -> None:
    keys = Keys("stackshift:")
    q = keys.queue("emails")
    run_id = new_run_id("emails")
    names = [q.stream, q.delayed, q.dead, q.stats, q.run(run_id), q.steps(run_id),
             q.idem("verify:user_123"), q.idem("{evil} *key")]  # fmt: skip
    assert len({key_slot(n.encode()) for n in names}) == 1
    # ...and counters get their own slot, with the seen-marks beside them.
    assert key_slot(keys.counter("files:f_1:rows").encode()) == key_slot(
        keys.counter_seen("files:f_1:rows", run_id).encode()
    )


def test_a_runs_three_script_keys_are_its_record_steps_and_bucket() -> None:
    q = Keys("stackshift:").queue("emails")
    run_id = new_run_id("emails")
    assert q.run_keys(run_id) == [q.run(run_id), q.steps(run_id), q.bucket(run_id)]


def test_run_ids_sort_by_creation_and_name_their_queue() -> None:
    ids = [new_run_id("emails") for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert queue_of_run(ids[0]) == "emails"


def test_a_run_id_is_a_ulid_whose_time_is_its_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    run_id = new_run_id("emails")
    after = time.time_ns() // 1_000_000
    ulid = run_id.partition(".")[0]
    digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
    value = 0
    for char in ulid:
        value = value * 32 + digits.index(char)
    assert value < 1 << 128  # 26 characters, the top 2 bits zero
    assert before <= value >> 80 <= after


@pytest.mark.parametrize("bad", ["", "nope", "01ABC.emails", "0" * 26 + ".bad name", 5])
def test_malformed_run_ids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidNameError):
        queue_of_run(bad)
