#!/usr/bin/env bash
# bench/gpu/run_mqar.sh — issue 12's MQAR experiment (python/experiments/mqar.py) in one call on a GPU
# machine: vla_torch compiled against the installed torch, then VLA_MQAR_WORKERS processes share the
# job list (every P-th job each, seeds outermost) on the one GPU until VLA_MQAR_DEADLINE_S, and the
# table of everything finished. Offline: Eigen's headers may come in _carry/prefix/include/eigen3,
# the authors' notebook (for the authors_vla model) at _carry/authors/07-vlav3-benchmark-fixed.ipynb.
#
#   VLA_MQAR_ARGS="--models vla softmax --pairs 8 32" bash bench/gpu/run_mqar.sh
#
# What comes back is four files in $OUT (a device call returns only a few files): mqar.jsonl (every
# finished run), summary.txt, gpu.txt and work.tgz (the workers' logs and JSON lines, and the
# models of --save-dir if it points under the work folder, $VLA_MQAR_WORK).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/vla_mqar_out}
work=${VLA_MQAR_WORK:-$out/work}
mkdir -p "$out" "$work"
cd "$root"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)} PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/vla_torch_ext}
[ -d "$root/_carry/prefix/include/eigen3" ] && export VLA_EIGEN_INCLUDE=${VLA_EIGEN_INCLUDE:-$root/_carry/prefix/include/eigen3}
nb="$root/_carry/authors/07-vlav3-benchmark-fixed.ipynb"
[ -f "$nb" ] && export VLA_AUTHORS_NOTEBOOK=${VLA_AUTHORS_NOTEBOOK:-$nb}
workers=${VLA_MQAR_WORKERS:-12}
deadline=${VLA_MQAR_DEADLINE_S:-400}
t0=$(date +%s)
if [ -z "${VLA_MQAR_SKIP_BUILD:-}" ]; then
  python3 -c "import sys; sys.path.insert(0, 'python'); import vla_torch, torch; print('built; CUDA operators:', torch._C._dispatch_has_kernel_for_dispatch_key('vla::vla_forward', 'CUDA'))" >"$out/build.log" 2>&1 \
    || { tail -30 "$out/build.log"; exit 1; }
  tail -1 "$out/build.log"; echo "build $(( $(date +%s) - t0 )) s"
fi
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"
t1=$(date +%s)
for i in $(seq 0 $((workers - 1))); do
  # shellcheck disable=SC2086
  timeout $((deadline + ${VLA_MQAR_GRACE_S:-150})) python3 python/experiments/mqar.py ${VLA_MQAR_ARGS:-} \
    --worker "$i/$workers" --deadline-s "$deadline" --threads 1 --out "$work/mqar_$i.jsonl" >"$work/worker_$i.log" 2>&1 &
done
wait
echo "workers $(( $(date +%s) - t1 )) s"
grep -h "torch_baselines against" "$work"/worker_*.log | head -1
grep -h -E "Traceback|Error:" "$work"/worker_*.log | sort | uniq -c | head -10
cat "$work"/mqar_*.jsonl > "$out/mqar.jsonl" 2>/dev/null
[ -s "$out/mqar.jsonl" ] && python3 python/experiments/mqar.py --summarize "$out/mqar.jsonl" | tee "$out/summary.txt"
tar czf "$out/work.tgz" -C "$work" . && [ "$work" = "$out/work" ] && rm -rf "$work"
