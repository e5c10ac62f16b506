"""The wheel is self-sufficient: built with ``python -m build``, installed into a fresh virtual
environment and run from a directory outside the repository, it migrates, ingests, verifies and
lists with the migrations it carries (``tracker/_migrations``), never the source tree's.

Needs the network (or pip's configured wheel sources) for hatchling and the runtime dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tracker.store.migrate import head_revision
from tracker.synthetic import snapshot_stream

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300
# Variables that could make the installed tracker see the repository or another environment.
LEAKY = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "TRACKER_DATABASE_URL")


def _clean_env(extra_path: Path | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in LEAKY}
    env["PYTHONNOUSERSITE"] = "1"
    if extra_path is not None:
        env["PATH"] = f"{extra_path}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    cwd: Path

    def tracker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([self.venv / "bin" / "tracker", *args], self.cwd, _clean_env(self.venv / "bin"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, REPO], root, _clean_env())
    (wheel,) = dist.glob("tracker-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", venv], root, _clean_env())
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], root, _clean_env())
    cwd = root / "elsewhere"
    cwd.mkdir()
    yield Installed(wheel, venv, cwd)


def test_wheel_carries_the_migrations(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = set(archive.namelist())
    assert "tracker/_migrations/env.py" in names
    assert "tracker/_migrations/script.py.mako" in names
    assert "tracker/_migrations/versions/0001_ledger.py" in names
    for version in (REPO / "migrations" / "versions").glob("*.py"):
        assert f"tracker/_migrations/versions/{version.name}" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert not [name for name in names if name.startswith(("tests/", "migrations/", "benchmarks/"))]


def test_installed_tracker_is_isolated_from_the_repository(installed: Installed) -> None:
    probe = "import tracker, tracker.store.migrate as m; print(tracker.__file__); print(m.migrations_dir())"
    result = _run([installed.venv / "bin" / "python", "-c", probe], installed.cwd, _clean_env())
    module, migrations = result.stdout.splitlines()
    site_packages = installed.venv.resolve()
    assert Path(module).resolve().is_relative_to(site_packages)
    assert Path(migrations).resolve() == Path(module).resolve().parent / "_migrations"
    assert not Path(module).resolve().is_relative_to(REPO)


def test_installed_tracker_end_to_end(installed: Installed) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version in installed.tracker("--version").stdout

    url = "sqlite:///ledger.db"  # relative: lands in the working directory, far from the repository
    upgraded = installed.tracker("--database-url", url, "db", "upgrade").stdout
    assert upgraded.strip() == f"{url}: empty -> {head_revision()}"
    assert (installed.cwd / "ledger.db").is_file()
    current = installed.tracker("--database-url", url, "db", "current").stdout
    assert current.strip() == f"{url}: revision {head_revision()} (head {head_revision()}: up to date)"

    snapshots = installed.cwd / "snapshots.jsonl"
    snapshots.write_text("".join(json.dumps(record) + "\n" for record in snapshot_stream(12, seed=5)))
    summary = json.loads(installed.tracker("--database-url", url, "ingest", str(snapshots), "--json").stdout)
    assert summary["rejected"] == 0
    assert summary["events_appended"] > 0

    report = json.loads(installed.tracker("--database-url", url, "audit", "verify", "--format", "json").stdout)
    assert report["ok"] is True
    assert report["events"] == summary["events_appended"]

    runs = json.loads(installed.tracker("--database-url", url, "runs", "list", "--format", "json").stdout)
    assert len(runs) == 12
    assert {run["run_id"] for run in runs} == {f"run_{index:08d}" for index in range(12)}
