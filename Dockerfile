# syntax=docker/dockerfile:1.7
# apprank serving image (CPU): ONNX Runtime behind FastAPI/uvicorn, no torch.
#
#   docker build -t apprank:0.1.0 .                       # models mounted at /models at run time
#   docker run -p 8000:8000 -v "$PWD/models:/models:ro" apprank:0.1.0
#   docker build -t apprank:0.1.0-models --target baked --build-context models=./models .
#
# The GPU variant is Dockerfile.gpu (a CUDA base image and the onnxruntime-gpu wheel).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: install the package and its serving extra into a self-contained venv ---------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model/ model/
COPY training/ training/
COPY service/ service/
COPY pipeline/ pipeline/
COPY simulation/ simulation/
COPY apprank/ apprank/
# Only the serving dependencies: the `train` extra (torch, onnx, pandas...) is never installed.
RUN pip install ".[serve]" \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    && apprank --help > /dev/null

# ---- base: the slim runtime, shared by the two final stages below ---------------------------------
FROM ${PYTHON_IMAGE} AS base
RUN groupadd --system --gid 10001 apprank \
    && useradd --system --uid 10001 --gid apprank --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin apprank \
    && mkdir -p /models /data \
    && chown apprank:apprank /models /data
COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/apprank-entrypoint
COPY --chmod=0644 deploy/docker/healthcheck.py /usr/local/lib/apprank/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APPRANK_MODELS_DIR=/models \
    APPRANK_HOST=0.0.0.0 \
    APPRANK_PORT=8000 \
    APPRANK_WORKERS=2 \
    APPRANK_DATABASE_URL=sqlite:////data/apprank.db \
    PROMETHEUS_MULTIPROC_DIR=/tmp/apprank-metrics \
    MPLCONFIGDIR=/tmp/apprank-matplotlib
WORKDIR /data
# The SQLite store lives here when no PostgreSQL URL is given; mount a volume to keep it.
VOLUME ["/data"]
EXPOSE 8000
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/apprank/healthcheck.py", "/healthz"]
ENTRYPOINT ["/usr/local/bin/apprank-entrypoint"]

# ---- baked: the models copied into the image (build with --build-context models=DIR) -------------
FROM base AS baked
COPY --from=models --chown=10001:10001 . /models/

# ---- runtime (default target): models mounted at /models ------------------------------------------
FROM base AS runtime
