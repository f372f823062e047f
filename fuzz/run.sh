#!/usr/bin/env bash
# Runs one cargo-fuzz target of the host-facing parsers (agent_channel, http_bodies,
# release_manifest, hal_spec) from its committed seeds (seeds/TARGET) for FUZZ_RUNS
# executions (default 1000000), in a working corpus under corpus/ (not committed).
# Usage: run.sh TARGET. Needs a nightly toolchain and cargo-fuzz.
set -euo pipefail

fuzz_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
target="${1:-}"
case "${target}" in
agent_channel | http_bodies | release_manifest | hal_spec) ;;
*)
    echo "run.sh: give a target: agent_channel, http_bodies, release_manifest or hal_spec" >&2
    exit 2
    ;;
esac
corpus="${fuzz_dir}/corpus/${target}"
mkdir -p "${corpus}"
cp -n -- "${fuzz_dir}/seeds/${target}"/* "${corpus}/"
cd "${fuzz_dir}"
exec cargo +nightly fuzz run "${target}" "${corpus}" -- -runs="${FUZZ_RUNS:-1000000}" -max_len=65536
