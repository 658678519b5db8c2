#!/usr/bin/env bash
# Build what users install into dist/: the sdist, and one abi3 wheel (CPython >= 3.10)
# tagged manylinux_2_17 (manylinux2014: glibc 2.17, so RHEL/CentOS 7 and 8 clusters too).
# zig links the extension against glibc 2.17's symbols whatever glibc this machine has;
# auditwheel then reads the symbols the wheel really needs, and the script fails unless
# they make it manylinux_2_17 and the wheel is tagged so.
#
#   bash .ci/wheel.sh            # with .venv/bin/python (make wheel)
#   PYTHON=/path/to/venv/bin/python bash .ci/wheel.sh
#
# The build tools (maturin, ziglang, auditwheel) are installed into that Python's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")

"$PY" -m pip install -q "maturin>=1.9,<2" "ziglang>=0.17,<0.18" "auditwheel>=6.1,<7"

# Only this build's files, so that dist/entropic-*.whl names exactly one wheel.
rm -f dist/entropic-*.whl dist/entropic-*.tar.gz
# maturin runs zig as `python3 -m ziglang`: the venv's python3 must come first on PATH.
PATH="$BIN:$PATH" "$PY" -m maturin build --release --compatibility manylinux2014 --zig --out dist
"$PY" -m maturin sdist --out dist

wheels=(dist/entropic-*.whl)
[ "${#wheels[@]}" -eq 1 ] || { echo "expected one wheel in dist/, found: ${wheels[*]}"; exit 1; }
"$BIN/auditwheel" show "${wheels[0]}"
"$BIN/auditwheel" show --json "${wheels[0]}" | "$PY" -c '
import json, platform, sys

report = json.load(sys.stdin)
name, verdict = report["wheel"], report["overall_tag"]
want = f"manylinux_2_17_{platform.machine()}"
if verdict != want or want not in name:
    sys.exit(f"{name}: auditwheel finds it {verdict}, not the {want} it must be")
print(f"auditwheel: {name} is {want} compatible")
'
ls -l dist/
