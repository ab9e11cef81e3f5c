# churn-scorer container image.
#
#   docker build -t churn-scorer:dev .
#   docker run --rm -p 9464:9464 \
#     -e CHURN_SCORER__KAFKA__BOOTSTRAP_SERVERS=kafka:9092 churn-scorer:dev
#
# The same image runs every subcommand (`run`, `generate`, `broker`, ...):
# override the CMD, e.g. `docker run churn-scorer:dev generate --help`.
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

# 1) Dependency layer: build every dependency (librdkafka included, the slow
#    part) against stub sources. This layer is reused as long as Cargo.toml
#    and Cargo.lock do not change.
#    Only the binary is built here, so [[bench]]/[[test]]/[[example]] tables
#    are dropped from the manifest (their sources are not in the build
#    context, see .dockerignore); the dependency graph and Cargo.lock are
#    unaffected. A stub is written for every remaining `path = ...` target.
COPY Cargo.toml Cargo.lock ./
RUN awk '/^\[\[(bench|test|example)\]\]/ { skip = 1; next } /^\[/ { skip = 0 } !skip' \
      Cargo.toml > Cargo.toml.bin && mv Cargo.toml.bin Cargo.toml \
 && mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for p in $(sed -n 's/^path *= *"\(.*\)"/\1/p' Cargo.toml); do \
      [ -e "$p" ] || { mkdir -p "$(dirname "$p")"; echo 'fn main() {}' > "$p"; }; \
    done \
 && cargo build --release --locked --bin churn-scorer \
 && rm -rf src

# 2) Application layer: the real sources. `config/` is needed at compile time
#    too: src/model.rs embeds config/model.toml with include_str!.
COPY src ./src
COPY config ./config
# Bump mtimes so cargo rebuilds the crate itself, not the stub.
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin churn-scorer \
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
