#!/usr/bin/env bash
# Resolves the Apache Kafka broker pinned in tests/kafka/pom.xml into
# tests/kafka/lib/ (the real-broker tests' classpath; Maven's cache is ~/.m2).
# Idempotent: does nothing when lib/ already holds the jars of this pom.
set -euo pipefail
cd "$(dirname "$0")"

stamp=lib/.resolved
want=$(sha256sum pom.xml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && ls lib/kafka_2.13-*.jar >/dev/null 2>&1; then
  exit 0
fi

command -v mvn >/dev/null || { echo "resolve.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
rm -rf lib.tmp
mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=lib.tmp
rm -rf lib
mv lib.tmp lib
echo "$want" > "$stamp"
echo "resolve.sh: $(ls lib/*.jar | wc -l) jars in tests/kafka/lib ($(ls lib/kafka_2.13-*.jar | xargs -n1 basename))"
