"""The container image, tested outside a container (no container runtime can run where these tests run; see
README "Container"): the Dockerfile's rules (slim base, non-root user, HEALTHCHECK, the production server),
then its build and run steps for real — the project built as a wheel as the build stage does, installed
apart from the checkout, the image's CMD started with the image's environment, and the HEALTHCHECK command
run against it (passing while the server is up, failing once it is stopped). compose.yaml is checked too."""
from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from prometheus_client.parser import text_string_to_metric_families

from cds_hooks.observability import gunicorn_hooks
from tests.service_fixtures.postgres import free_port
from tests.service_fixtures.waiting import wait_until_answering

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in final_stage():
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(word: str) -> list[str]:
    [rest] = [rest for w, rest in final_stage() if w == word]
    if word == "HEALTHCHECK":
        rest = rest[rest.index("CMD ") + 4:]
    return json.loads(rest)


def config_of(argv: list[str]) -> str:
    return argv[argv.index("-c") + 1]


def test_dockerfile_slim_base_non_root_healthcheck_and_the_production_server():
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    [user] = [rest for word, rest in stage if word == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    health = [rest for word, rest in stage if word == "HEALTHCHECK"]
    assert health and "--interval=" in health[0]
    command = exec_form("CMD")
    assert command[0] == "gunicorn" and command[-1] == "cds_hooks.app:create_app()"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    production = next(line for line in readme[readme.index("**Production**"):].splitlines() if "bin/gunicorn " in line)
    readme_argv = shlex.split(production)
    assert config_of(readme_argv) == config_of(command), "the image runs the README's production configuration"
    assert readme_argv[-1] == command[-1]
    # That configuration takes the hooks that sum the workers' metrics and write gunicorn's lines as JSON.
    config = importlib.import_module(config_of(command).removeprefix("python:"))
    for hook in ("on_starting", "child_exit", "on_exit", "logger_class"):
        assert getattr(config, hook) is getattr(gunicorn_hooks, hook), hook
    for word, rest in instructions():
        if word == "COPY" and "--from" not in rest:
            for source in shlex.split(rest)[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the project"
    assert image_env()["CRAMP_PROFILE"] == "production" and image_env()["CRAMP_LOG_FORMAT"] == "json"


def test_compose_runs_the_service_on_postgresql_with_secrets_from_the_environment():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    service, database = compose["services"]["cramp-cds"], compose["services"]["postgres"]
    assert service["environment"]["CRAMP_DATABASE"].startswith("postgresql://")
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy" and "healthcheck" in database
    assert database["image"].startswith("postgres:15")
    for value in (*service["environment"].values(), *database["environment"].values()):
        assert "${" in value or not any(k in value.lower() for k in ("password=", "secret")), value


@pytest.mark.slow
def test_the_image_entry_command_serves_from_the_built_wheel_and_its_healthcheck_passes(tmp_path):
    wheels, site, data = tmp_path / "wheels", tmp_path / "site", tmp_path / "data"
    data.mkdir()
    # Build stage: `pip wheel .` (its build backend comes from the package index, as in the image).
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(wheels), str(ROOT)], check=True, cwd=tmp_path, timeout=300)
    [wheel] = wheels.glob("cramp_cds-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, timeout=300)
    # The mounted trusted-clients file of the image's environment.
    jwk = {**ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True), "kid": "k1"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    clients = tmp_path / "trusted-clients.json"
    clients.write_text(json.dumps({"clients": [{"iss": "https://ehr.example.org", "jwks_file": "jwks.json"}]}))
    port = free_port()
    env = {**os.environ, **image_env(), "PYTHONPATH": str(site), "PATH": f"{BIN}:{os.environ['PATH']}",
           "CRAMP_HOST": "127.0.0.1",  # the image listens on 0.0.0.0; tests stay on loopback
           "CRAMP_PORT": str(port), "CRAMP_DATA_DIR": str(data), "CRAMP_TRUSTED_CLIENTS": str(clients),
           "CRAMP_SECRET_KEY": "container-test-secret-0123456789"}
    where = subprocess.run([sys.executable, "-c", "import cds_hooks, plugin; print(cds_hooks.__file__, plugin.__file__)"],
                           env=env, cwd=data, capture_output=True, text=True, check=True).stdout
    assert all(path.startswith(str(site)) for path in where.split()), "the code runs from the wheel, not the checkout"

    command = exec_form("CMD")
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=env, cwd=data, stdout=out,
                                  stderr=subprocess.STDOUT)
    health = exec_form("HEALTHCHECK")
    health[0] = sys.executable
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_answering(server, base + "/readyz", log=log.read_text)
        assert subprocess.run(health, env=env, timeout=30, check=False).returncode == 0
        assert requests.get(base + "/cds-services", timeout=5).status_code == 401, "production: authentication on"
        families = {f.name for f in text_string_to_metric_families(requests.get(base + "/metrics", timeout=5).text)}
        assert "cramp_http_requests" in families
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert subprocess.run(health, env=env, timeout=30, check=False, capture_output=True).returncode != 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines), "JSON logs, every line"
