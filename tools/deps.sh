#!/usr/bin/env bash
# Installs what vla's build needs on Debian/Ubuntu, skipping what is already there.
# Usage: tools/deps.sh [extra apt packages...]
set -euo pipefail
pkgs=(libeigen3-dev catch2 libbenchmark-dev nlohmann-json3-dev cmake g++ "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "vla: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
