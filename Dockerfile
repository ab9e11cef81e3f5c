# churn-scorer container image.
#
#   DOCKER_BUILDKIT=1 docker build -t churn-scorer:dev .
#   docker run --rm -p 9464:9464 \
#     -e CHURN_SCORER__KAFKA__BOOTSTRAP_SERVERS=kafka:9092 churn-scorer:dev
#
# The image runs the production subcommands (`run`, `score`, `backtest`,
# `fit`); override the CMD, e.g. `docker run churn-scorer:dev score --help`.
# The development tools (`broker`, `demo`, `generate`, `bench`) are not in it.
# See docs/deployment.md.

# ---------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# rdkafka-sys compiles the bundled librdkafka with its own configure script +
# make (no cmake): it needs a C toolchain, perl, python3, zlib headers, and
# OpenSSL and Cyrus SASL headers for TLS and SASL (PLAIN, SCRAM, OAUTHBEARER, GSSAPI).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential perl python3 pkg-config zlib1g-dev libssl-dev libsasl2-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# The workspace is built as a whole: the manifests, the crates' sources and
# `config/` (churn-core embeds config/model.toml with include_str!). BuildKit
# cache mounts keep the registry and the target directory between builds, so
# librdkafka (the slow part) is compiled once.
# `--no-default-features` leaves out the `devtools` feature: the development
# broker, the generator, the demo and the benchmark are not in this image
# (`churn-scorer --help` lists score, run, backtest and fit). A development
# image with them: `--build-arg CARGO_FEATURES=devtools` (docker-compose.yml
# builds that one, for its generator).
ARG CARGO_FEATURES=""
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY config ./config
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --no-default-features --features "$CARGO_FEATURES" \
      --bin churn-scorer \
 && install -Dm755 target/release/churn-scorer /out/churn-scorer

# ---------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: TLS to managed Kafka; libssl3, libsasl2-2 (+ the GSSAPI
# module for Kerberos): librdkafka's TLS and SASL; curl: the HEALTHCHECK below.
# zlib (used by librdkafka) is part of the base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
      libssl3 libsasl2-2 libsasl2-modules-gssapi-mit \
 && rm -rf /var/lib/apt/lists/*

# Fixed numeric uid/gid so Kubernetes `runAsNonRoot` can verify it.
RUN groupadd --system --gid 10001 churn \
 && useradd --system --uid 10001 --gid churn --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin churn

COPY --from=builder /out/churn-scorer /usr/local/bin/churn-scorer
COPY config/worker.toml /etc/churn-scorer/worker.toml
COPY config/model.toml  /etc/churn-scorer/model.toml

# Defaults; every config key can be overridden with
# CHURN_SCORER__<SECTION>__<KEY> (e.g. CHURN_SCORER__KAFKA__BOOTSTRAP_SERVERS).
ENV CHURN_SCORER__MODEL__PATH=/etc/churn-scorer/model.toml \
    RUST_LOG=info

USER 10001:10001
EXPOSE 9464

# Liveness only (/healthz). Readiness (/readyz) is 503 while partition state
# is being restored, which is normal after a rebalance; orchestrators that
# route traffic should probe /readyz themselves (see deploy/k8s).
# Subcommands without an HTTP server (generate, broker) disable this check
# (docker-compose.yml does so for the generator).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:9464/healthz || exit 1

# The worker handles SIGTERM itself: it drains within
# shutdown.drain_timeout_secs (30 s), so give `docker stop -t 45`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["churn-scorer"]
CMD ["run", "--config", "/etc/churn-scorer/worker.toml"]
