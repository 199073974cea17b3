"""Helpers for the sandbox tests (and for trying the page by hand): a local-profile app with the sandbox
mounted, and a real server on loopback in a thread.

    with live_server(sandbox_app(tmp_path)) as base_url:
        ...  # http://127.0.0.1:<port>
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from flask import Flask


def sandbox_app(data_dir: Path, env: dict[str, str] | None = None) -> Flask:
    """The real service (local profile: authentication off; database under ``data_dir``) with ``/sandbox``."""
    from cds_hooks.app import create_app
    from cds_hooks.settings import Settings

    base = {"CRAMP_PROFILE": "local", "CRAMP_AUTH": "off", "CRAMP_DATA_DIR": str(data_dir),
            "CRAMP_DATABASE": str(Path(data_dir) / "sandbox.db"),
            "CRAMP_SECRET_KEY": "sandbox-test-secret-0123456789", "CRAMP_LOG_LEVEL": "ERROR"}
    return create_app(Settings.from_env({**base, **(env or {})}))


@contextlib.contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """Serve ``app`` with Werkzeug on 127.0.0.1 (a free port) in a daemon thread; yield the base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="cramp-sandbox-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
