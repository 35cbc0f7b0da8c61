"""Real inference servers for the tests: KServe 0.21 and MLServer 1.7, each in a virtual environment of its own.

The environments are built from the package index on first use and kept in
``$PATCHLENS_SERVER_VENVS`` (default ``~/.cache/patchlens/test-servers``), one
folder per server, version and Python, so a later run (and CI on the same
machine) starts at once. A build is locked against a parallel test run and
marked complete only at its end; both servers are built at the same time.
Without the package index the tests that need them are skipped with the
reason; a build that fails for another reason fails them.

Each server serves the planted numpy model of ``tests/servers`` on
127.0.0.1 only, on a free port, and is stopped (then killed) when its test
ends; the tests bound their requests and time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "servers"
CACHE = Path(os.environ.get("PATCHLENS_SERVER_VENVS", Path.home() / ".cache" / "patchlens" / "test-servers"))
PY = f"py{sys.version_info.major}{sys.version_info.minor}"
#: each environment's packages, every one pinned (numpy is the planted model's only need beside the server), so that
#: pip installs without resolving anything: a build takes about half the time, and is the same on every machine
LOCKS = {"kserve": HERE / "kserve-0.21.0.txt", "mlserver": HERE / "mlserver-1.7.1.txt"}
BUILD_SECONDS = 900  # a build that takes longer is stuck


def venv_path(name: str) -> Path:
    return CACHE / f"{LOCKS[name].stem}-{PY}"


def _python(folder: Path) -> Path:
    return folder / "bin" / "python"


_builds: dict[str, subprocess.Popen] = {}


def _uv() -> str | None:
    """uv's binary (a test dependency): it downloads in parallel and links from its cache, so a build from an
    empty cache takes seconds where pip took minutes (benchmarks/RESULTS.md); None where it is missing."""
    try:
        import uv
    except ImportError:
        return None
    return uv.find_uv_bin()


def _install_commands(folder: Path, lock: Path) -> str:
    """Shell commands that create ``folder`` as a venv holding exactly the pinned packages of ``lock``."""
    uv = _uv()
    if uv is not None:
        return (f'"{uv}" venv -q --python "{sys.executable}" "{folder}"; '
                f'"{uv}" pip install -q --python "{_python(folder)}" --no-deps --only-binary :all: -r "{lock}"')
    return (f'"{sys.executable}" -m venv "{folder}"; '
            f'"{_python(folder)}" -m pip install -q --disable-pip-version-check --no-deps --only-binary :all: -r "{lock}"')


def _start_build(name: str) -> None:
    """Start building ``name``'s environment in the background, unless it is built or being built."""
    folder = venv_path(name)
    if (folder / ".complete").exists() or name in _builds:
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    script = (
        f'set -e; exec 9>"{folder}.lock"; flock 9; '
        f'if [ -e "{folder}/.complete" ]; then exit 0; fi; rm -rf "{folder}"; '
        f"{_install_commands(folder, LOCKS[name])}; "
        f'touch "{folder}/.complete"'
    )
    log = open(f"{folder}.log", "w")  # noqa: SIM115 - closed with the process
    _builds[name] = subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def environment(name: str) -> Path:
    """The built environment of ``name`` (building both servers' at once on first use), or skip/fail saying why."""
    for other in LOCKS:
        _start_build(other)
    folder = venv_path(name)
    build = _builds.get(name)
    if build is not None:
        try:
            code = build.wait(BUILD_SECONDS)
        except subprocess.TimeoutExpired:
            build.kill()
            code = -1
        if code != 0:
            tail = Path(f"{folder}.log").read_text(errors="replace").strip().splitlines()[-3:]
            if not _index_reachable(folder):
                pytest.skip(f"{name}: the package index cannot be reached to build its test environment ({' | '.join(tail)})")
            pytest.fail(f"{name}: building its environment in {folder} failed: {' | '.join(tail)}")
    if not (folder / ".complete").exists():
        pytest.fail(f"{name}: {folder} is not complete")
    return folder


def _index_reachable(folder: Path) -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "numpy", "--disable-pip-version-check"],
                           capture_output=True, timeout=120)
    return probe.returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    """A server process and the URL of its model."""

    process: subprocess.Popen
    base: str
    log: Path

    def url(self, protocol: str = "v2") -> str:
        return f"{self.base}/{protocol}/models/planted"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def wait_ready(process: subprocess.Popen, ready_url: str, log: Path, seconds: float = 90) -> None:
    """Until ``ready_url`` answers 200; a server that exits or stays unready fails with the end of its log."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}): {log.read_text(errors='replace')[-600:]}")
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready within {seconds:g}s: {log.read_text(errors='replace')[-600:]}")


@contextmanager
def serve(name: str, tmp: Path, *, keep_alive: int = 5) -> Iterator[Running]:
    """Start ``name`` serving the planted model on 127.0.0.1; stop it (terminate, then kill) on leaving."""
    folder = environment(name)
    port = free_port()
    log = tmp / f"{name}-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    if name == "kserve":
        args = [str(_python(folder)), str(HERE / "kserve_planted.py"), str(port), str(keep_alive)]
        cwd = HERE
    else:
        args = [str(folder / "bin" / "mlserver"), "start", "."]
        cwd = HERE / "mlserver_planted"
        env.update(MLSERVER_HOST="127.0.0.1", MLSERVER_HTTP_PORT=str(port), MLSERVER_GRPC_PORT=str(free_port()),
                   MLSERVER_METRICS_ENDPOINT="", MLSERVER_PARALLEL_WORKERS="0", MLSERVER_LOAD_MODELS_AT_STARTUP="true")
    with open(log, "w") as out:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base + "/v2/models/planted/ready", log)
        yield Running(process, base, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
