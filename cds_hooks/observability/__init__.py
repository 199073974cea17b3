"""What operators watch: Prometheus metrics, structured logs, request ids. Flask-free; the service wires them
in :mod:`cds_hooks.service.observability`.

| module | job |
|---|---|
| `metrics` | the Prometheus metrics (prometheus_client), multi-process aware, and their text exposition |
| `logs` | logging set-up: one JSON object per line or text, the request id on every record |
| `gunicorn_hooks` | the gunicorn server hooks that make the metrics multi-worker safe |
"""
