#!/usr/bin/env bash
# `churn-scorer bench` against a real Apache Kafka broker (the version pinned
# in tests/kafka/pom.xml, resolved by tests/kafka/resolve.sh): starts a
# single combined KRaft node on 127.0.0.1 with a bounded heap, waits until it
# answers metadata requests, runs `bench --bootstrap-servers` on it with the
# arguments given, and stops the broker and removes its data on exit (also
# on failure or Ctrl-C). Not part of `cargo test`.
#
#   cargo build --release
#   benches/real_broker.sh --shape sparse --rounds 3 --kcat --python-worker benches/python_worker.py
#
# Environment: CHURN_SCORER_BIN (default target/release/churn-scorer),
# KAFKA_HEAP (default 512m), JAVA_HOME (else `java` on the PATH).
# Needs java 17+, maven (first run only), kcat (for the readiness check and
# --kcat) and python3.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CHURN_SCORER_BIN:-$root/target/release/churn-scorer}"
heap="${KAFKA_HEAP:-512m}"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"

[ -x "$bin" ] || { echo "real_broker.sh: no $bin (cargo build --release, or set CHURN_SCORER_BIN)" >&2; exit 1; }
command -v kcat >/dev/null || { echo "real_broker.sh: kcat not found (apt-get install kcat)" >&2; exit 1; }
"$root/tests/kafka/resolve.sh"
lib="$root/tests/kafka/lib"

dir="$(mktemp -d -t churn-bench-kafka.XXXXXX)"
pid=""
stop() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # A controlled shutdown takes a few seconds; no more than 30.
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Two free ports (broker, controller), and a KRaft cluster id: 16 random
# bytes in URL-safe base64 without padding, never starting with '-' (and
# passed as --cluster-id=..., so that even such an id could not be read as
# an option).
read -r port controller cluster_id < <(python3 - <<'EOF'
import base64, os, socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
ports = [s.getsockname()[1] for s in socks]
while True:
    cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not cid.startswith("-"):
        break
print(ports[0], ports[1], cid)
EOF
)
bootstrap="127.0.0.1:$port"

cat > "$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF

started=$SECONDS
log4j="-Dlog4j2.configurationFile=$root/tests/kafka/log4j2.properties"
"$java" -Xmx256m "$log4j" -cp "$lib/*" kafka.tools.StorageTool format \
  --cluster-id="$cluster_id" -c "$dir/server.properties" > "$dir/format.log" 2>&1 \
  || { cat "$dir/format.log" >&2; exit 1; }
"$java" -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
  "$log4j" -cp "$lib/*" kafka.Kafka "$dir/server.properties" > "$dir/server.log" 2>&1 &
pid=$!

deadline=$((SECONDS + 90))
until kcat -L -b "$bootstrap" -m 2 2>/dev/null | grep -q "1 brokers"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "real_broker.sh: the broker exited while starting:" >&2
    tail -40 "$dir/server.log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "real_broker.sh: the broker did not answer on $bootstrap within 90 s:" >&2
    tail -40 "$dir/server.log" >&2
    exit 1
  fi
  sleep 0.5
done
kafka_jar="$(cd "$lib" && ls kafka_2.13-*.jar | head -1)"
echo "real_broker.sh: ${kafka_jar%.jar} (KRaft, 1 node, heap $heap) answering on $bootstrap after $((SECONDS - started)) s" >&2

# The broker's CPU is not in the bench's own CPU lines (another process on
# the same cores): its total over the run, from /proc (Linux).
broker_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.1f", ($12 + $13) / hz }' "/proc/$pid/stat" 2>/dev/null || echo "?"
}
cpu_before="$(broker_cpu)"
status=0
"$bin" bench --bootstrap-servers "$bootstrap" "$@" || status=$?
echo "real_broker.sh: the broker used $(awk -v a="$cpu_before" -v b="$(broker_cpu)" 'BEGIN { printf "%.1f", b - a }') s of CPU during the bench (load, rounds and latency phase together)" >&2
exit "$status"
