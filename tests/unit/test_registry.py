"""Job registration: payload types from annotations (strings too), policies."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from stackshift import JobContext, Stackshift
from stackshift.errors import ConfigError, InvalidNameError, UnknownJobError


class Upload(msgspec.Struct, rename="camel", frozen=True):
    file_id: str


def make_app() -> Stackshift:
    return Stackshift("memory://registry")


def test_payload_type_comes_from_a_string_annotation() -> None:
    app = make_app()

    @app.job("processUpload")
    async def process(ctx: JobContext[Upload]) -> None: ...

    assert app.registry.get("processUpload").payload_type is Upload


def test_payload_type_can_be_given_explicitly() -> None:
    app = make_app()

    @app.job("processUpload", payload=Upload)
    async def process(ctx: Any) -> None: ...

    assert app.registry.get("processUpload").payload_type is Upload


def test_without_a_type_the_payload_is_plain_json() -> None:
    app = make_app()

    @app.job("anything")
    async def anything(ctx: JobContext[Any]) -> None: ...

    assert app.registry.get("anything").payload_type is Any


def test_retries_default_to_three_and_can_be_set() -> None:
    app = make_app()

    @app.job("a")
    async def a(ctx: Any) -> None: ...

    @app.job("b", retries=0, timeout=None)
    async def b(ctx: Any) -> None: ...

    assert app.registry.get("a").retries == 3
    assert app.registry.get("b").retries == 0 and app.registry.get("b").timeout is None


def test_sync_handlers_are_refused() -> None:
    app = make_app()
    with pytest.raises(ConfigError, match="async"):
        app.job("sync")(lambda ctx: None)


def test_bad_job_names_are_refused() -> None:
    app = make_app()
    with pytest.raises(InvalidNameError):

        @app.job("bad name")
        async def bad(ctx: Any) -> None: ...


def test_two_handlers_cannot_share_a_name() -> None:
    app = make_app()

    @app.job("dup")
    async def one(ctx: Any) -> None: ...

    with pytest.raises(ConfigError, match="already registered"):

        @app.job("dup")
        async def two(ctx: Any) -> None: ...


def test_unknown_jobs_name_what_is_registered() -> None:
    app = make_app()

    @app.job("known")
    async def known(ctx: Any) -> None: ...

    with pytest.raises(UnknownJobError, match="registered: known"):
        app.registry.get("unknown")


def test_step_return_types_are_cached_without_keeping_functions_alive() -> None:
    import gc
    import weakref

    from stackshift.step import _return_type

    def make() -> Any:
        big = bytearray(10_000_000)
        return lambda: len(big)

    fn = make()
    assert _return_type(fn) is Any
    alive = weakref.ref(fn)
    del fn
    gc.collect()
    assert alive() is None

    def typed() -> int:
        return 1

    assert _return_type(typed) is int
