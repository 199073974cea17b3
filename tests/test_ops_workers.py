"""Several gunicorn workers share one store (issue 13 item 4, issue 14 item 2): on an SQLite file and on a
real PostgreSQL server. A client JWT replayed to another worker, or after a restart, is refused (X7); feedback
sent to any worker is stored once and suppresses on every worker (F2, F3)."""
from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from prometheus_client.parser import text_string_to_metric_families

from cds_hooks.settings import OVERRIDE_REASON_SYSTEM
from cds_hooks.storage.database import Database
from cds_hooks.storage.feedback import FeedbackStore
from tests.service_fixtures.gunicorn import Gunicorn
from tests.service_fixtures.support import SECRET, cramps_on_thiazide_prefetch, feedback_entry, hook_request

pytestmark = pytest.mark.slow

ISS = "https://ehr.example.org"
KEY = ec.generate_private_key(ec.SECP384R1())
SERVICE = "/cds-services/leg-cramp-patient-view"


def signed(aud: str) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, KEY, algorithm="ES384", headers={"typ": "JWT", "kid": "k1"})


def server_env(tmp_path, database_url: str, **extra: str) -> dict[str, str]:
    return {"CRAMP_PROFILE": "local", "CRAMP_DATA_DIR": str(tmp_path / "var"), "CRAMP_SECRET_KEY": SECRET,
            "CRAMP_DATABASE": database_url, "CRAMP_SANDBOX": "off", **extra}


@pytest.fixture
def secured_env(tmp_path, database_url):
    jwk = {**ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1", "alg": "ES384", "use": "sig"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "clients.json").write_text(json.dumps({"clients": [{"iss": ISS, "jwks_file": "jwks.json"}]}))
    return server_env(tmp_path, database_url, CRAMP_AUTH="on",
                      CRAMP_TRUSTED_CLIENTS=str(tmp_path / "clients.json"))


def access_lines(server: Gunicorn, endpoint: str, since: int = 0) -> list[dict]:
    """The JSON access lines of ``endpoint`` in the server's log (after character ``since``)."""
    lines = [json.loads(line) for line in server.log()[since:].splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "cramp_cds.access" and line.get("endpoint") == endpoint]


def burst(url: str, n: int, headers: dict | None = None) -> list[int]:
    """``n`` GETs at once, each on its own connection."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: requests.get(url, headers=headers, timeout=10).status_code, range(n)))


def test_x7_a_jwt_replayed_to_the_other_worker_or_after_a_restart_is_refused(tmp_path, secured_env):
    with Gunicorn({**secured_env, "CRAMP_LOG_FORMAT": "json"}, tmp_path / "gunicorn.log") as server:
        url = server.base + "/cds-services"
        # The same token on 12 connections at once: exactly one call is let in, whichever worker takes it. Until
        # both workers have answered one burst (so one of them refused a token the other accepted), try again.
        for _ in range(5):
            mark = len(server.log())
            token = signed(url)
            assert sorted(burst(url, 12, {"Authorization": f"Bearer {token}"})) == [200] + [401] * 11
            if len({line["pid"] for line in access_lines(server, "discovery", mark)}) == 2:
                break
        else:
            pytest.fail("the bursts never reached both workers")
        fresh = signed(url)
        assert requests.get(url, headers={"Authorization": f"Bearer {fresh}"}, timeout=10).status_code == 200

        server.restart()  # new worker processes: nothing is remembered in memory
        url = server.base + "/cds-services"
        replay = requests.get(url, headers={"Authorization": f"Bearer {fresh}"}, timeout=10)
        assert replay.status_code == 401
        assert token not in server.log() and fresh not in server.log(), "tokens never reach the log"


def test_metrics_are_summed_over_the_workers_and_every_log_line_is_json(tmp_path):
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", CRAMP_LOG_FORMAT="json", CRAMP_METRICS="on")
    with Gunicorn(env, tmp_path / "gunicorn.log") as server:
        url = server.base + "/cds-services"
        sent = 0
        for _ in range(5):
            sent += len(burst(url, 16))
            if len({line["pid"] for line in access_lines(server, "discovery")}) == 2:
                break
        else:
            pytest.fail("the bursts never reached both workers")
        for _ in range(4):  # whichever worker answers /metrics, it reports both workers' counts
            found = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in
                     text_string_to_metric_families(requests.get(server.base + "/metrics", timeout=10).text)
                     for s in family.samples}
            key = ("cramp_http_requests_total", (("endpoint", "discovery"), ("service", ""), ("status", "200")))
            assert found[key] == sent
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert all(isinstance(json.loads(line), dict) for line in lines), "gunicorn's own lines are JSON too"
    assert {json.loads(line)["logger"] for line in lines} >= {"cramp_cds.access", "gunicorn.error"}


def cramps_request(pid: str) -> dict:
    """A patient-view call for patient ``pid`` with documented cramps and a thiazide: one card."""
    body = hook_request(prefetch=cramps_on_thiazide_prefetch(), pid=pid)
    for key in ("medications", "conditions"):
        for entry in body["prefetch"][key]["entry"]:
            entry["resource"]["subject"]["reference"] = f"Patient/{pid}"
    body["prefetch"]["patient"]["id"] = pid
    return body


def test_f2_f3_feedback_through_two_workers_is_stored_once_and_suppresses_on_both(tmp_path, database_url):
    with Gunicorn(server_env(tmp_path, database_url), tmp_path / "gunicorn.log") as server:
        def call(i: int) -> dict:
            body = cramps_request(f"patient-{i}")
            [card] = requests.post(server.base + SERVICE, json=body, timeout=30).json()["cards"]
            answer = requests.post(server.base + SERVICE + "/feedback", timeout=30,
                                   json={"feedback": [feedback_entry(card["uuid"], reason="already-addressed")]})
            assert answer.status_code == 200
            return card

        with ThreadPoolExecutor(6) as pool:
            cards = list(pool.map(call, range(24)))

        store = FeedbackStore(Database(database_url), suppression_days=30, suppression_reasons=("already-addressed",),
                              reason_system=OVERRIDE_REASON_SYSTEM)
        stored = store.feedback_rows()
        assert sorted(r["card_uuid"] for r in stored) == sorted(c["uuid"] for c in cards)
        assert {r["contributors"] for r in store.issued_rows()} == {"thiazide-diuretic"}

        # patient-3's override is seen by whichever worker answers next
        body = cramps_request("patient-3")
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: requests.post(server.base + SERVICE, json=body, timeout=30).json(),
                                    range(8)))
        assert answers == [{"cards": []}] * 8
        store.close()
