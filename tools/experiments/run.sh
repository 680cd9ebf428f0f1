#!/usr/bin/env bash
# tools/experiments/run.sh — every experiment of docs/experiments.md, from a fresh Debian machine:
# installs what is missing (cmake, g++, make, Eigen, gnuplot), builds vla_experiments, runs all
# experiments on every core, writes CSVs and PNGs to docs/figures/ and splices the regenerated
# tables into docs/experiments.md. Extra arguments go to vla_experiments (e.g. `recall` to run
# one experiment, `--threads 1`, or `--scale 0.1` for a quick smoke run of the long sequences).
set -euo pipefail
start=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
command -v gnuplot >/dev/null 2>&1 || need+=(gnuplot-nox)
dpkg -s libeigen3-dev >/dev/null 2>&1 || [ -f /usr/include/eigen3/Eigen/Core ] || need+=(libeigen3-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "run.sh: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi

BUILD=${BUILD:-build-experiments}
JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DVLA_BUILD_TESTS=OFF -DVLA_BUILD_BENCH=OFF \
  -DVLA_BUILD_EXAMPLES=OFF -DVLA_BUILD_EXPERIMENTS=ON >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target vla_experiments
built=$(date +%s)

OUT=docs/figures
mkdir -p "$OUT/tables"
"$BUILD/tools/experiments/vla_experiments" --out "$OUT" "$@"
gnuplot -e "dir='$OUT'" tools/experiments/plots.gp

# Splice each <!-- table:NAME --> ... <!-- /table:NAME --> block of docs/experiments.md.
DOC=docs/experiments.md
if [ -f "$DOC" ]; then
  awk -v dir="$OUT/tables" '
    /^<!-- table:[a-z0-9_]+ -->$/ {
      print
      name = substr($0, 12, length($0) - 15)
      f = dir "/" name ".md"
      n = 0
      while ((getline line < f) > 0) { print line; n++ }
      close(f)
      if (n == 0) { print "run.sh: no table " f ", keeping the old one" > "/dev/stderr"; next }
      skip = 1
      next
    }
    /^<!-- \/table:[a-z0-9_]+ -->$/ { skip = 0 }
    !skip { print }' "$DOC" > "$DOC.tmp"
  mv "$DOC.tmp" "$DOC"
fi
end=$(date +%s)
echo "run.sh: build $((built - start)) s, experiments + plots $((end - built)) s, total $((end - start)) s on $JOBS cores"
