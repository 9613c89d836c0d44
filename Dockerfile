# The one image every Cipherstream service runs from: `python -m services.<name>.app worker`.
# Non-root, no compilers in the final stage, writes only to /tmp (mount an emptyDir there in k8s).
# Base pinned to a patch release; the release pipeline pins it by digest. tests/deploy/test_dockerfile.py
# parses this file (non-root USER, pinned bases, no ADD, the chart's uid and port).
FROM python:3.11.7-slim-bookworm AS build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
# The demo's synthetic data generator, which `cipherstream generate` and `cipherstream demo` run.
COPY demo ./demo
# The project and its runtime dependencies only (no dev extras); bytecode compiled here, because the
# read-only root filesystem lets no process write it at run time.
RUN pip install '.[postgres]'

FROM python:3.11.7-slim-bookworm
RUN groupadd --system --gid 10001 cipherstream \
 && useradd --system --uid 10001 --gid cipherstream --home-dir /nonexistent --shell /usr/sbin/nologin cipherstream
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root schemas /app/schemas
COPY --chown=root:root services/dispatch/campaigns.yaml /app/campaigns.yaml
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CIPHERSTREAM_SCHEMA_DIR=/app/schemas CIPHERSTREAM_CAMPAIGNS_FILE=/app/campaigns.yaml \
    CIPHERSTREAM_DATA_DIR=/tmp/cipherstream HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --retries=6 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:6066/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m"]
CMD ["services.ingest.app", "worker"]
