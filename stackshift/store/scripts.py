"""Loads the Lua scripts in lua/ once and calls them by SHA.

Each script's source is its flags line, then lua/_prelude.lua (clock and fence
helpers, so the fencing check exists once), then the libraries it uses, if any
(LIBRARIES), then its body. We call EVALSHA
directly, not redis-py's ``register_script``: inside a pipeline redis-py sends
SCRIPT EXISTS before every execute, one more round trip per batch. Instead
scripts are loaded once at connect and reloaded on NOSCRIPT (after a Redis
restart), which is safe because NOSCRIPT means the script did not run.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from .commands import Commands

SCRIPT_NAMES = (
    "bury",
    "cancel",
    "checkpoint",
    "cron_tick",
    "enqueue",
    "event_route",
    "event_send",
    "event_wait",
    "finish",
    "increment",
    "prune",
    "redrive",
    "renew",
    "resume",
    "start",
    "timers",
)

# Code shared by scripts beyond the prelude, prepended (in this order) to the
# scripts that use it: how a run is made (_enqueue), how a suspended run goes
# back to its queue (_resume), every way a run leaves a worker (_finish), how
# an attempt starts (_start).
_FINISHING = ("_resume.lua", "_finish.lua")
LIBRARIES = {
    "bury": _FINISHING,
    "cancel": _FINISHING,
    "cron_tick": ("_enqueue.lua",),
    "enqueue": ("_enqueue.lua",),
    "finish": _FINISHING,
    "resume": ("_resume.lua",),
    "start": (*_FINISHING, "_start.lua"),
    "timers": ("_resume.lua",),
}


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text()


class Script:
    """One Lua script: its source and SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def load_scripts(*, with_flags: bool = True) -> dict[str, Script]:
    """Build every script. ``with_flags=False`` drops the ``#!lua`` line
    (fakeredis, behind memory://, rejects it)."""
    prelude = _read("_prelude.lua")
    scripts = {}
    for name in SCRIPT_NAMES:
        flags, _, body = _read(f"{name}.lua").partition("\n")
        if not flags.startswith("#!lua"):
            raise RuntimeError(f"lua/{name}.lua must start with its #!lua flags line")
        head = flags + "\n" if with_flags else ""
        library = "".join(_read(lib) + "\n" for lib in LIBRARIES.get(name, ()))
        scripts[name] = Script(name, head + prelude + "\n" + library + body)
    return scripts


async def ensure_loaded(commands: Commands, scripts: dict[str, Script]) -> None:
    """SCRIPT LOAD every script where scripts run (one pipelined round trip;
    on Redis Cluster, on every primary)."""
    await commands.load([script.source for script in scripts.values()])


def _evalsha(script: Script, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


async def call(
    commands: Commands,
    scripts: dict[str, Script],
    script: Script,
    keys: list[str],
    args: list[Any],
) -> Any:
    """EVALSHA, loading the scripts again if Redis lost them."""
    command = _evalsha(script, keys, args)
    try:
        return await commands.execute(*command)
    except NoScriptError:
        await ensure_loaded(commands, scripts)
        return await commands.execute(*command)


async def call_many(
    commands: Commands,
    scripts: dict[str, Script],
    calls: list[tuple[Script, list[str], list[Any]]],
) -> list[Any]:
    """Run many script calls in one pipelined round trip.

    Results are returned in order; an error reply is returned as the exception
    object, for the caller to map (one bad call does not hide the others).
    """
    if not calls:
        return []
    if len(calls) == 1:
        # The usual case (one queue, one batch): one command, not a pipeline.
        script, keys, args = calls[0]
        try:
            return [await call(commands, scripts, script, keys, args)]
        except ResponseError as exc:  # an error reply, returned as a pipeline would
            return [exc]
    results = await commands.execute_many([_evalsha(*c) for c in calls])
    # Only the NOSCRIPT ones did not run (Redis restarted): run exactly those again.
    retry_at = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if retry_at:
        await ensure_loaded(commands, scripts)
        again = await commands.execute_many([_evalsha(*calls[i]) for i in retry_at])
        for i, value in zip(retry_at, again, strict=True):
            results[i] = value
    return results
