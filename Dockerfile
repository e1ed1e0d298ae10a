# syntax=docker/dockerfile:1
# One image for every role, chosen by its command: api (default), consume-stream, migrate,
# train, retrain (docs/deployment.md).

# -- builder: wheels of the locked dependencies and of the project, installed into a venv -------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# binutils: strip the shared libraries' symbol tables, which no one reads in production;
# libgomp1: the OpenMP runtime that implicit's extension links.
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The lock pins every dependency with its hashes: two builds install the same files.
COPY requirements.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --only-binary=:all: --no-deps --no-compile \
        -r requirements.lock

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY training ./training
COPY migrations ./migrations
RUN /opt/venv/bin/pip install --no-deps --no-compile . \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall -y pip setuptools

# Not needed to run: the packages' own test suites, C headers and Cython sources; pyarrow's
# Flight RPC and cloud file systems (nothing here imports them; its core does not link them);
# implicit's CUDA extension (no GPU in this image). Symbol tables are stripped, except from the
# libraries that wheels vendor in *.libs/ (patched in place, which strip would break). No bytecode
# is shipped (72 MB): a container compiles what it imports once, into PYTHONPYCACHEPREFIX.
WORKDIR /opt/venv/lib/python3.11/site-packages
RUN find . -depth -type d \( -name tests -o -name include \) -exec rm -rf {} + \
    && find . \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pyi' \) -delete \
    && rm -f pyarrow/libarrow_flight.so* pyarrow/libarrow_python_flight.so* pyarrow/_flight.* \
        pyarrow/libarrow_s3.so* pyarrow/_s3fs.* pyarrow/_gcsfs.* pyarrow/_azurefs.* \
        pyarrow/_hdfs.* pyarrow/_pyarrow_cpp_tests.* implicit/gpu/_cuda.so \
    && find . -name '*.so*' -type f -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
    && /opt/venv/bin/python -c "import app.main, training.cli, training.data, pyarrow.parquet, implicit.cpu.als" \
    && find /opt/venv -depth -type d -name __pycache__ -exec rm -rf {} +

# -- runtime: the venv, a non-root user and an init that forwards signals ------------------------
FROM python:3.11-slim-bookworm AS runtime

# tini runs as PID 1: it passes SIGTERM on to the service and reaps exited child processes.
# libgomp1: the OpenMP runtime that implicit's extension links.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libgomp1 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log \
    && groupadd --system --gid 10001 recsys \
    && useradd --system --uid 10001 --gid recsys --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin recsys

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY deploy/entrypoint.sh deploy/healthcheck.py ./deploy/
RUN mkdir -p /app/var/models && chown -R recsys:recsys /app/var

# BLAS threads would only compete with the request threads for the same cores.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPYCACHEPREFIX=/tmp/pycache \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    RECSYS_HOST=0.0.0.0 \
    RECSYS_PORT=8000 \
    RECSYS_VAR_DIR=/app/var \
    RECSYS_MODEL_DIR=/app/var/models \
    RECSYS_STREAM_METRICS_HOST=0.0.0.0

USER 10001:10001
EXPOSE 8000 9109
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]
ENTRYPOINT ["tini", "--", "/app/deploy/entrypoint.sh"]
CMD ["api"]
