#!/usr/bin/env bash
# Installs what building and testing Quiver needs on Debian/Ubuntu, only where it is missing:
# a C++ toolchain, cmake >= 3.24 (FAISS builds from source), OpenBLAS, and Python venv support for
# the API test suite. Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have_cmd g++ || need+=(g++)
have_cmd make || need+=(make)
have_cmd pkg-config || need+=(pkg-config)
have_pkg libopenblas-dev || need+=(libopenblas-dev)
have_cmd cmake || need+=(cmake)
# The cluster test cuts a node off with iptables rules on loopback ports.
have_cmd iptables || [ -x /usr/sbin/iptables ] || need+=(iptables)
have_cmd python3 || need+=(python3)
# The container scenario (make compose-smoke) builds a local image and runs docker-compose 1.x.
have_cmd docker || need+=(docker.io)
have_cmd docker-compose || need+=(docker-compose)
if have_cmd python3 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need+=(python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# FAISS needs cmake >= 3.24; older distributions (e.g. Ubuntu 22.04) get it from PyPI.
cmake_ok() {
    have_cmd cmake || return 1
    local v
    v=$(cmake --version | head -n1 | sed -E 's/[^0-9]*([0-9]+)\.([0-9]+).*/\1 \2/')
    set -- $v
    [ "$1" -gt 3 ] || { [ "$1" -eq 3 ] && [ "$2" -ge 24 ]; }
}
if ! cmake_ok; then
    tools="$HOME/.cache/quiver/tools"
    echo "install-deps: cmake < 3.24, installing a newer one into $tools" >&2
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check "cmake>=3.24"
    echo "install-deps: add $tools/bin to PATH (the Makefile does this)" >&2
fi
