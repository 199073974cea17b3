# cramp-cds: the CDS Hooks service in a container (docs/deployment.md).
#   docker build -t cramp-cds .
#   docker run -p 8080:8080 -e CRAMP_SECRET_KEY=... -v ./trusted-clients.json:/etc/cramp/trusted-clients.json:ro cramp-cds
# Build stage: the project as a wheel (the same files `pip install` would install, nothing else of the checkout).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY plugin ./plugin
COPY cds_hooks ./cds_hooks
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Run stage: slim Python, the wheels, a non-root user, the production server (gunicorn with the project's config).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CRAMP_PROFILE=production \
    CRAMP_HOST=0.0.0.0 \
    CRAMP_PORT=8080 \
    CRAMP_DATA_DIR=/var/lib/cramp \
    CRAMP_LOG_FORMAT=json \
    CRAMP_METRICS=on \
    CRAMP_TRUSTED_CLIENTS=/etc/cramp/trusted-clients.json
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/cramp --create-home --shell /usr/sbin/nologin cramp
USER 10001:10001
WORKDIR /var/lib/cramp
VOLUME /var/lib/cramp
EXPOSE 8080
# Liveness: the process answers. Readiness (knowledge loaded, database reachable and writable) is GET /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CRAMP_PORT', '8080') + '/healthz', timeout=4)"]
CMD ["gunicorn", "-c", "python:cds_hooks.service.gunicorn_conf", "cds_hooks.app:create_app()"]
