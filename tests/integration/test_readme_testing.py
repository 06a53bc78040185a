"""The README's "Testing your jobs" example runs as written: its conftest and
test files, extracted from the README, pass under pytest on memory://."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_testing_example_passes(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Testing your jobs", 1)[1].split("\n## ", 1)[0]
    files = re.findall(r"```python\n# (tests/\S+)[^\n]*\n(.*?)```", section, re.S)
    assert [name for name, _ in files] == [
        "tests/conftest.py",
        "tests/test_uploads.py",
        "tests/test_refunds.py",
    ]
    for name, body in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("STACKSHIFT_REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
