"""The README's production command, run for real on 127.0.0.1 (a free port, a temporary data folder).

The command is read from the README itself (the first ``gunicorn`` line of the "Production" block), so the
command the tests prove is the command users are told to run.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def production_command() -> list[str]:
    """The README's production gunicorn command, with ``.venv/bin`` resolved to this interpreter's folder."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Production**"):]
    line = next(ln for ln in section.splitlines() if "bin/gunicorn " in ln)
    argv = shlex.split(line)
    argv[0] = str(Path(sys.executable).parent / "gunicorn")
    return argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    port: int
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def production_server(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    port = free_port()
    full_env = {**os.environ, "CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(data_dir),
                "CRAMP_SECRET_KEY": "test-secret-key-0123456789abcdef", "CRAMP_HOST": "127.0.0.1",
                "CRAMP_PORT": str(port), **(env or {})}
    log = data_dir / "gunicorn.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(production_command(), cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = RunningServer(f"http://127.0.0.1:{port}", port, process, log)
    try:
        _wait_until_up(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(server: RunningServer, attempts: int = 300) -> None:
    for _ in range(attempts):
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.process.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if requests.get(server.url + "/healthz", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # still booting
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer /healthz:\n{server.log_text()[-3000:]}")
