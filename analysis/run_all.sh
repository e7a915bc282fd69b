#!/usr/bin/env sh
# Run every study at full size (about 32 minutes on 2 cores); pass --quick for a smoke run.
# Results: analysis/results/<study>.md and .png (with --quick: <study>-quick.md/.png).
set -eu
cd "$(dirname "$0")/.."
PY=.venv/bin/python
for study in calibration power baselines early_promotion shadow calibration_ml power_ml pods realtraces; do
    echo "== $study"
    /usr/bin/time -f "   $study: %e s wall" "$PY" "analysis/$study.py" "$@"
done
