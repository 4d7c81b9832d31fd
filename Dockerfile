# syntax=docker/dockerfile:1
# The modelrollout operator image.
#   docker build -t modelrollout:dev .
# Stage 1 builds a wheel of the project (runtime dependencies only: no [lab]/[test] extras)
# and installs it into a virtualenv; stage 2 copies just that venv onto a clean base.
# The result runs as UID 10001 on a read-only root filesystem (the chart mounts an
# emptyDir at /tmp, the only writable path, and sets HOME to it).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel needs: the build stays valid whatever else the repository holds.
COPY pyproject.toml ./
# The operator package only: the lab (operator/modelrollout_lab) never enters the image.
COPY operator/modelrollout/ ./operator/modelrollout/
# The project's wheel and a wheel of every pinned runtime dependency, then an offline
# install of exactly those wheels into the venv that the final stage copies.
RUN python -m venv /opt/venv \
 && pip wheel --no-cache-dir --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/modelrollout-*.whl \
 && /opt/venv/bin/modelrollout --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelrollout" \
      org.opencontainers.image.description="Kubernetes operator: staged, Prometheus-judged canary releases of ML model servers" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 modelrollout \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin modelrollout
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
# 8080: kopf liveness probe (/healthz); 9090: operator metrics (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["modelrollout", "run"]
CMD ["--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090", "--log-format=json"]
