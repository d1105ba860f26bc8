#!/usr/bin/env bash
# The GPU checks of cooper_like in one short call (at most 4 minutes on one GPU).
#
#   bash benchmarks/gpu_check.sh OUTDIR
#
# Writes everything it measures under OUTDIR (created if missing):
#   summary.txt          one line per stage: ran / skipped / failed, with its wall time
#   versions.txt         Python, torch, CUDA, GPU, and which torch-call path the core takes
#   tests.txt            the CUDA tests (tests/test_cuda.py, the CUDA cases of the differential oracle
#                        and of tests/test_core_trust.py), with the reason of every skip
#   step_overhead.md     hand-written step vs cooper_like (vs Cooper where carried) on the GPU
#   indexed_scale.md     IndexedMultiplier step time at 1e6-1e8 rows on the GPU
#
# Nothing is downloaded. Wheels carried along in the ignored folder .gpu_wheels/ (e.g. Cooper's) are
# installed with --no-index first. Without CUDA the script runs its CPU parts (versions, the test
# selection, which then skips, and a quick CPU step-overhead run) and reports the CUDA parts as skipped,
# so that the default test suite can check the script itself. Exit status: 0 when every stage that ran
# passed, 1 otherwise, 2 on a usage error.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUTDIR" >&2
    exit 2
fi
OUT=$1
mkdir -p "$OUT" || { echo "error: cannot create OUTDIR $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}
: > "$OUT/summary.txt"
STATUS=0

# stage NAME LIMIT_S COMMAND...: run COMMAND under a time limit, log its outcome to summary.txt.
stage() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    local outcome="ran"
    if [ $rc -eq 124 ]; then outcome="failed (over its ${limit} s limit)"; STATUS=1
    elif [ $rc -ne 0 ]; then outcome="failed (exit $rc)"; STATUS=1; fi
    echo "$name: $outcome in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

skipped() {
    echo "$1: skipped ($2)" | tee -a "$OUT/summary.txt"
}

if compgen -G ".gpu_wheels/*.whl" > /dev/null; then
    stage "carried wheels" 60 "$PYTHON" -m pip install --no-index --no-deps --find-links .gpu_wheels \
        .gpu_wheels/*.whl > "$OUT/pip.txt" 2>&1
else
    skipped "carried wheels" "no .gpu_wheels/*.whl"
fi

stage "versions" 60 "$PYTHON" - > "$OUT/versions.txt" 2>&1 <<'EOF'
import platform

import torch

import cooper_like
from cooper_like.optim import torch_calls

print(f"python {platform.python_version()}")
print(f"torch {torch.__version__}")
print(f"CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)")
print(f"cooper_like from {cooper_like.__file__}")
print(f"torch internals verified for this torch (VERIFIED_TORCH_VERSIONS={torch_calls.VERIFIED_TORCH_VERSIONS}): "
      f"{torch_calls.torch_internals_verified()}")
print(f"core torch-call path: {'lean (undecorated step, hook checks)' if torch_calls.LEAN_CALLS else 'public calls (fallback)'}")
try:
    import cooper
    print(f"cooper {getattr(cooper, '__version__', '?')} importable")
except ImportError as error:
    print(f"cooper not importable ({error})")
EOF
cat "$OUT/versions.txt"

CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

stage "CUDA tests" 100 "$PYTHON" -m pytest -q -rs -p no:cacheprovider \
    tests/test_cuda.py tests/test_differential_oracle.py tests/test_core_trust.py -k cuda \
    > "$OUT/tests.txt" 2>&1
tail -n 3 "$OUT/tests.txt"

if [ "$CUDA" = "1" ]; then
    stage "step overhead (cuda)" 50 "$PYTHON" benchmarks/step_overhead.py --device cuda --repeats 60 \
        --steps-per-block 10 --warmup 20 --out "$OUT/step_overhead.md" > "$OUT/step_overhead.txt" 2>&1
    stage "indexed scale (cuda, 1e6-1e8)" 70 "$PYTHON" benchmarks/indexed_scale.py --device cuda \
        --sizes 1000000 10000000 --with-1e8 --repeats 8 --steps-per-block 10 --warmup 5 \
        --out "$OUT/indexed_scale.md" > "$OUT/indexed_scale.txt" 2>&1
else
    skipped "step overhead (cuda)" "no CUDA"
    skipped "indexed scale (cuda, 1e6-1e8)" "no CUDA"
    stage "step overhead (cpu, quick)" 90 "$PYTHON" benchmarks/step_overhead.py --quick --sizes small \
        --out "$OUT/step_overhead_cpu.md" > "$OUT/step_overhead_cpu.txt" 2>&1
fi

echo "total: ${SECONDS} s, status $STATUS" | tee -a "$OUT/summary.txt"
exit $STATUS
