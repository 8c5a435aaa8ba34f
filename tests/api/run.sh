#!/usr/bin/env bash
# Runs the end-to-end API test suite against a built Quiver binary.
#
#   tests/api/run.sh [extra pytest args]
#
# Environment:
#   QUIVER_BIN            server binary (default $HOME/.cache/quiver/target/debug/quiver)
#   QUIVER_VENV           virtualenv location (default $HOME/.cache/quiver/venv)
#   QUIVER_RECALL_REPORT  if set, test_recall.py writes its recall table there
#   QUIVER_TESTS          test directory (default tests/api; tests/cluster for the cluster test)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
venv="${QUIVER_VENV:-$HOME/.cache/quiver/venv}"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

if [ ! -x "$venv/bin/python" ]; then
    echo "run.sh: creating virtualenv at $venv" >&2
    python3 -m venv "$venv"
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    echo "run.sh: installing $requirements" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
fi

cd "$repo_root"
exec "$venv/bin/python" -m pytest "${QUIVER_TESTS:-tests/api}" -q -x --durations=10 "$@"
