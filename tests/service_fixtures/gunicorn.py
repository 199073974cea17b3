"""The production server on loopback for tests: the README's gunicorn command with 2 workers on a free port,
its own data folder and environment, stopped (and restartable) by the test."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Self

from tests.service_fixtures.postgres import free_port
from tests.service_fixtures.waiting import wait_until_answering

BIN = Path(sys.executable).parent


ROOT = Path(__file__).resolve().parents[2]


def readme_command() -> list[str]:
    """The README's production command (the first gunicorn line of its "Production" block), with ``.venv/bin``
    resolved to this interpreter's folder: what the tests run is what users are told to run."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Production**"):]
    argv = shlex.split(next(line for line in section.splitlines() if "bin/gunicorn " in line))
    return [str(BIN / "gunicorn"), *argv[1:]]


def production_command(port: int, workers: int = 2) -> list[str]:
    """The README's production command, on a test port (``-w``/``-b`` override the configuration file)."""
    *options, app = readme_command()
    return [*options, "-w", str(workers), "-b", f"127.0.0.1:{port}", app]


class Gunicorn:
    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 2) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.workers = workers
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Gunicorn:
        self._offset = len(self.log())
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server's lifetime
        self.proc = subprocess.Popen(production_command(self.port, self.workers), env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])
        log.close()
        try:
            wait_until_answering(self.proc, self.base + "/healthz", seconds=timeout, ready=self._all_workers_up,
                                 log=self.log)
        except AssertionError:
            self.stop()
            raise
        return self

    def _all_workers_up(self) -> bool:
        return self.log()[self._offset:].count("cramp-cds ready") >= self.workers

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.port = free_port()
        self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
