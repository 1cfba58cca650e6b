#!/usr/bin/env bash
# The Python client's tests, against real redis-server processes with the module:
#
#   FENCELOCK_MODULE=/path/to/libfencelock.so [REDIS_SERVER=redis-server] clients/python/run-tests.sh [pytest args]
#
# Makes clients/python/.venv on first use (installing Debian's python3-venv when it is
# missing and we are root), installs the package editable with the pinned test
# dependencies of requirements-test.txt (again only when those files change), then runs
# pytest. PYTHON picks the interpreter (default python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -z ${FENCELOCK_MODULE:-} ]]; then
  echo "run-tests.sh: set FENCELOCK_MODULE to the path of libfencelock.so" >&2
  exit 2
fi
if [[ ! -f $FENCELOCK_MODULE ]]; then
  echo "run-tests.sh: FENCELOCK_MODULE=$FENCELOCK_MODULE is not a file" >&2
  exit 2
fi
FENCELOCK_MODULE="$(realpath "$FENCELOCK_MODULE")"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
if ! command -v "$REDIS_SERVER" >/dev/null; then
  echo "run-tests.sh: no redis-server at '$REDIS_SERVER' (set REDIS_SERVER)" >&2
  exit 2
fi
export FENCELOCK_MODULE REDIS_SERVER
PYTHON="${PYTHON:-python3}"
venv="$here/.venv"

if [[ ! -x $venv/bin/python ]]; then
  rm -rf "$venv"
  if ! "$PYTHON" -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"  # a failed venv (no ensurepip) leaves a python without pip
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "run-tests.sh: installing python3-venv" >&2
      apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv
      "$PYTHON" -m venv "$venv"
    else
      echo "run-tests.sh: '$PYTHON -m venv' failed; install it with: sudo apt-get install -y python3-venv" >&2
      exit 2
    fi
  fi
fi

stamp="$venv/.installed"
want="$(cat "$here/pyproject.toml" "$here/requirements-test.txt" | sha256sum)"
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements-test.txt" -e "$here"
  echo "$want" >"$stamp"
fi

cd "$here"
exec "$venv/bin/python" -m pytest "$@"
