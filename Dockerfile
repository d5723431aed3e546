# syntax=docker/dockerfile:1
# isnetflow runtime image: every kfp component runs in it (install_kfp_package=False).
# CUDA-capable: the pinned torch==2.14.1 wheel from PyPI bundles the CUDA runtime, cuDNN and NCCL
# (nvidia-* wheels), so a slim Python base is enough; the host provides only the NVIDIA driver
# (via the NVIDIA container toolkit / GPU operator). Versions come from constraints.txt, the lock.
# The same image runs the MLflow tracking server of the Kubernetes deployment (k8s/) and, with MLServer
# (the [serving] extra), the champion's KServe predictor (k8s/serving).
# Checked by tests/deploy: hadolint (no findings, no ignores) and checkov (no failed check, no skip).

# The base image is written out (not an ARG) so that linters see the pinned tag.
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
# pip is pinned here, everything else by constraints.txt. The MLflow tracking server of k8s/ also needs its
# PostgreSQL driver and the basic-auth app's CSRF package (mlflow[auth]); they are not dependencies of the
# package, so they are named here, with the lock's versions (tests/deploy check that the pins agree).
RUN pip install "pip==26.3" \
 && pip install -c constraints.txt ".[serving]" "psycopg2-binary==2.9.13" "Flask-WTF==1.3.0" \
 && pip check

FROM python:3.11.7-slim-bookworm
LABEL org.opencontainers.image.title="isnetflow" \
      org.opencontainers.image.description="ISNet chest X-ray training pipeline (kfp v2 + MLflow)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/isnetflow
RUN groupadd --system --gid 10001 isnetflow \
 && useradd --system --uid 10001 --gid isnetflow --create-home --home-dir /home/isnetflow isnetflow
# The kfp layer is installed in /opt/venv as isnetflow_kfp.components / isnetflow_kfp.pipelines; no copy of
# components/ or pipelines/ goes into the working directory, where `python -m` (the kfp executor) would
# find them as top-level packages named plain `components` and `pipelines`.
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
HEALTHCHECK NONE
ENTRYPOINT ["isnetflow"]
CMD ["--help"]
