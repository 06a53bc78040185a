"""One virtualenv per peer under bench/.venvs/<peer>, made on demand.

The peers' pins clash (arq wants redis-py < 6, taskiq-redis wants >= 6), so each
gets its own. Versions are pinned so runs compare like with like; the stamp
file records what was installed, and a changed list reinstalls.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

VENVS = Path(__file__).resolve().parent / ".venvs"


@dataclasses.dataclass(frozen=True)
class Peer:
    packages: tuple[str, ...]
    module: str
    venv: str = ""  # the venv it runs in (default: its own name)


# Each peer in its lightest documented set-up too (results not kept; see each
# adapter's docstring), in the same venv: ``<peer>-light``.
LIGHT = {
    "arq-light": "bench.peers.arq_light",
    "saq-light": "bench.peers.saq_light",
    "streaq-light": "bench.peers.streaq_light",
    "taskiq-light": "bench.peers.taskiq_light",
}


PEERS = {
    "arq": Peer(("arq==0.28.0", "hiredis"), "bench.peers.arq_peer"),
    "saq": Peer(
        ("saq[redis]==0.26.4", "typing_extensions", "hiredis"), "bench.peers.saq_peer"
    ),
    "streaq": Peer(("streaq==7.2.0", "redis", "hiredis"), "bench.peers.streaq_peer"),
    "taskiq": Peer(
        ("taskiq==0.13.0", "taskiq-redis==1.2.4", "hiredis"),
        "bench.peers.taskiq_peer",
    ),
}
PEERS |= {
    name: dataclasses.replace(
        PEERS[name.removesuffix("-light")],
        module=module,
        venv=name.removesuffix("-light"),
    )
    for name, module in LIGHT.items()
}


def ensure_venv(peer: str) -> Path:
    """The peer venv's python, creating the venv and installing it if needed."""
    spec = PEERS[peer]
    root = VENVS / (spec.venv or peer)
    python = root / "bin" / "python"
    stamp = root / ".bench-installed"
    wanted = "\n".join(spec.packages)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         *spec.packages],
        check=True,
    )  # fmt: skip
    stamp.write_text(wanted)
    return python
