#!/usr/bin/env bash
# Resolve the jars of a runnable Apache Kafka broker (KRaft) from Maven Central
# into a cache dir, using scripts/kafka/pom.xml, and print the libs dir.
#
#   scripts/kafka/fetch-kafka.sh            -> prints e.g. ~/.cache/timefuse/kafka-4.4.0/libs
#   TIMEFUSE_KAFKA_CACHE=/some/dir fetch-kafka.sh
#
# Idempotent: a marker file holding the pom's checksum makes later runs a no-op,
# and editing the pom (e.g. a version bump) re-resolves. Only the libs dir goes
# to stdout; Maven's own output (and its exact error, with its exit code) goes
# to stderr, so callers can do `libs=$(fetch-kafka.sh)`.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pom="$script_dir/pom.xml"

kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n 1)
if [[ -z "$kafka_version" ]]; then
    echo "fetch-kafka: no <kafka.version> property in $pom" >&2
    exit 2
fi

cache_dir=${TIMEFUSE_KAFKA_CACHE:-${HOME:-/tmp}/.cache/timefuse/kafka-$kafka_version}
libs_dir="$cache_dir/libs"
marker="$cache_dir/.complete"
pom_sum=$(sha256sum "$pom" | cut -d ' ' -f 1)

is_complete() {
    [[ -f "$marker" && -d "$libs_dir" && "$(cat "$marker")" == "$pom_sum" ]]
}

# Fast path without taking the lock: the common case in a warm checkout.
if is_complete; then
    echo "$libs_dir"
    exit 0
fi

if ! command -v mvn >/dev/null 2>&1; then
    echo "fetch-kafka: 'mvn' not found on PATH; install Maven (Debian: apt-get install maven)" >&2
    exit 127
fi

mkdir -p "$cache_dir"

# Parallel test runs (pytest-xdist, two checkouts) share the cache: serialise.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache_dir/.lock"
    flock 9
fi
if is_complete; then # someone else finished it while we waited
    echo "$libs_dir"
    exit 0
fi

# Resolve into a scratch dir and swap it in, so an interrupted run never
# leaves a half-filled libs dir that looks usable.
staging="$cache_dir/libs.staging.$$"
trap 'rm -rf "$staging"' EXIT
rm -rf "$staging"

# Java takes user.home from the passwd entry, not $HOME; follow $HOME like the
# cache dir does, so accounts with an unwritable passwd home (e.g. nobody ->
# /nonexistent) still get a usable ~/.m2.
if [[ -n "${HOME:-}" ]]; then
    export MAVEN_OPTS="-Duser.home=$HOME ${MAVEN_OPTS:-}"
fi

echo "fetch-kafka: resolving Kafka $kafka_version jars into $libs_dir" >&2
status=0
mvn -B -q -ntp -Dstyle.color=never -f "$pom" \
    dependency:copy-dependencies \
    -DincludeScope=runtime \
    -DoutputDirectory="$staging" >&2 || status=$?
if [[ $status -ne 0 ]]; then
    echo "fetch-kafka: Maven could not resolve Kafka $kafka_version (exit $status); see its error above" >&2
    exit "$status"
fi

if ! compgen -G "$staging/kafka_2.13-$kafka_version.jar" >/dev/null; then
    echo "fetch-kafka: Maven succeeded but kafka_2.13-$kafka_version.jar is missing from $staging" >&2
    exit 1
fi

rm -rf "$libs_dir"
mv "$staging" "$libs_dir"
echo "$pom_sum" >"$marker"
echo "$libs_dir"
