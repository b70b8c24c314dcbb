# The project's own image: the migrations (alembic upgrade head) and the
# console command (trace-summaries), as deploy/cnpg/migrate-job.yaml and
# deploy/cnpg/refresh-cronjob.yaml run them.
#
#   docker build -t registry.example.com/cnpg-trace-summaries:0.1.0 \
#       --build-arg SOURCE_URL="$(git remote get-url origin)" .
#   docker run --rm -e DATABASE_URL=postgresql://app:...@host:5432/app \
#       registry.example.com/cnpg-trace-summaries:0.1.0 alembic upgrade head
#
# Nothing here connects to a database or holds a secret: DATABASE_URL (and the
# TRACE_SUMMARIES_* options) are given when the container runs.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the project and its dependencies in a virtualenv --------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /build
# What `pip install .` reads: the metadata, the readme it names, the package.
COPY pyproject.toml README.md ./
COPY src/ src/
# No extras: the test and bench dependencies stay out of the image.
RUN /opt/venv/bin/pip install . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# -- runtime: the virtualenv, the migration environment, a user that is not root --
FROM ${PYTHON_IMAGE}
ARG SOURCE_URL=""
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cnpg-trace-summaries" \
      org.opencontainers.image.description="Alembic migrations and the trace-summaries command for otel_trace_summaries on PostgreSQL/CloudNativePG" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# A numeric user, so that Kubernetes can check runAsNonRoot without a passwd lookup.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# alembic.ini finds alembic/ beside itself (script_location = %(here)s/alembic),
# so `alembic upgrade head` works from this directory. Both stay owned by root:
# the container only reads them (readOnlyRootFilesystem works).
COPY alembic.ini ./
COPY alembic/ alembic/
USER 10001:10001
CMD ["alembic", "upgrade", "head"]
