#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (kafka_2.13 and its runtime dependencies)
# from Maven Central into <repo>/.cache/kafka/<version>/libs, for the
# integration-test rig (tests/integration/servers/kafka.py).
#
# Usage: scripts/kafka/fetch.sh [VERSION]   (default: $KAFKA_VERSION or 4.4.0)
#
# Idempotent: does nothing when the libs dir is already complete. Jars are
# copied into a temporary dir that is renamed into place only after Maven
# succeeds, so an interrupted fetch never looks complete. Needs only java + mvn.
# Prints the libs dir as its last line of stdout (Maven's output goes to stderr).
set -euo pipefail

version="${1:-${KAFKA_VERSION:-4.4.0}}"
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/../.." && pwd)"
version_dir="${repo_root}/.cache/kafka/${version}"
libs="${version_dir}/libs"
marker_jar="kafka_2.13-${version}.jar"

if [[ -f "${libs}/${marker_jar}" ]]; then
  echo "${libs}"
  exit 0
fi

for tool in java mvn; do
  if ! command -v "${tool}" >/dev/null 2>&1; then
    echo "fetch.sh: '${tool}' not found on PATH" >&2
    exit 1
  fi
done

mkdir -p "${version_dir}"
# Partial dirs of fetches killed outright (no trap ran); old enough to be dead.
find "${version_dir}" -maxdepth 1 -name 'libs.partial.*' -mmin +60 -exec rm -rf {} +
tmp="$(mktemp -d "${version_dir}/libs.partial.XXXXXX")"
cleanup() {
  rm -rf "${tmp}"
  # Leave no empty .cache/kafka/<version> behind after a failed fetch.
  rmdir "${version_dir}" 2>/dev/null || true
}
trap cleanup EXIT

echo "fetch.sh: fetching Kafka ${version} jars from Maven Central..." >&2
mvn -q -B -f "${script_dir}/pom.xml" \
  "-Dkafka.version=${version}" \
  dependency:copy-dependencies \
  "-DoutputDirectory=${tmp}" \
  -DincludeScope=runtime >&2

if [[ ! -f "${tmp}/${marker_jar}" ]]; then
  echo "fetch.sh: Maven finished but ${marker_jar} is missing" >&2
  exit 1
fi

# A leftover libs dir without the marker jar is incomplete: replace it.
if [[ -d "${libs}" && ! -f "${libs}/${marker_jar}" ]]; then
  rm -rf "${libs}"
fi
# rename(2) is atomic; if a concurrent fetch won the race, keep its result.
if ! mv -T "${tmp}" "${libs}" 2>/dev/null; then
  if [[ ! -f "${libs}/${marker_jar}" ]]; then
    echo "fetch.sh: could not move jars into ${libs}" >&2
    exit 1
  fi
fi

echo "${libs}"
