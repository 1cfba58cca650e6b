#!/usr/bin/env bash
# Tests of the Node.js client against a real redis-server with the module, with ioredis,
# node-redis 5 and node-redis 4. Installs what is missing (as root, from Debian's
# archive), then `npm ci` and `node --test`.
#
#   FENCELOCK_MODULE=/path/to/libfencelock.so [REDIS_SERVER=redis-server] [REDIS_CLI=redis-cli] bash run-tests.sh
#
# REDIS_CLI (for the cluster tests' `redis-cli --cluster create`) defaults to the redis-cli
# beside REDIS_SERVER, else the one on the PATH.
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "clients/node: $*" >&2; exit 1; }

[[ -n ${FENCELOCK_MODULE:-} ]] || die "FENCELOCK_MODULE is not set: point it at libfencelock.so (make build writes target/release/libfencelock.so)"
[[ -f $FENCELOCK_MODULE ]] || die "FENCELOCK_MODULE=$FENCELOCK_MODULE: no such file"
FENCELOCK_MODULE=$(cd "$(dirname "$FENCELOCK_MODULE")" && pwd)/$(basename "$FENCELOCK_MODULE")
export FENCELOCK_MODULE
export REDIS_SERVER=${REDIS_SERVER:-redis-server}

# Debian 12 has Node 18 with npm 9, enough for this package.
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [[ $REDIS_SERVER == redis-server ]] && ! command -v redis-server >/dev/null 2>&1; then
  missing+=(redis-server)
fi
if (( ${#missing[@]} )); then
  if [[ $(id -u) -ne 0 ]]; then
    die "needs ${missing[*]}: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  fi
  echo "clients/node: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v "$REDIS_SERVER" >/dev/null 2>&1 || die "REDIS_SERVER=$REDIS_SERVER: not found"

major=$(node -p 'process.versions.node.split(".")[0]')
(( major >= 18 )) || die "Node $(node --version) is too old: 18 or later is needed"

npm ci --no-audit --no-fund --loglevel=error

# Files run one after another on a 2-core machine; within a file the tests wait on the
# server, not the CPU, so two files at a time keep the timings honest and halve the run.
concurrency=()
if node --test-concurrency=2 -e '' >/dev/null 2>&1; then concurrency=(--test-concurrency=2); fi
# One line per test, not TAP, in CI logs (the spec reporter exists from Node 18.9).
reporter=()
if node --test-reporter=spec -e '' >/dev/null 2>&1; then reporter=(--test-reporter=spec); fi
exec node --test "${concurrency[@]}" "${reporter[@]}" test/*.test.js
