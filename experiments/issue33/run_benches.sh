#!/bin/sh
# usage: run_benches.sh MODEL TAG CONTROLS
M=$1; T=$2; C=$3
B=".venv/bin/unsample bench edit --model $M --methods edict --steps 36 --inversion-guidance 1 --mask-rule otsu --mask-smooth 1"
cd "$(dirname "$0")/../.." && mkdir -p out/i33
[ -f out/i33/$T-clean-ladder/results.json ] || $B --pairs 50 --controls swap --masks noise --ladder --out out/i33/$T-clean-ladder > out/i33/$T-clean-ladder.log 2>&1
[ -f out/i33/$T-calib/results.json ] || $B --pairs 30 --controls $C --masks noise,none --check --out out/i33/$T-calib > out/i33/$T-calib.log 2>&1
[ -f out/i33/$T-bg-check/results.json ] || $B --pairs 20 --controls swap --masks noise --backgrounds --check --out out/i33/$T-bg-check > out/i33/$T-bg-check.log 2>&1
[ -f out/i33/$T-robust-check/results.json ] || $B --pairs 20 --controls swap --masks noise --robustness --check --out out/i33/$T-robust-check > out/i33/$T-robust-check.log 2>&1
[ -f out/i33/$T-robust-ladder/results.json ] || $B --pairs 20 --controls swap --masks noise --robustness --ladder --out out/i33/$T-robust-ladder > out/i33/$T-robust-ladder.log 2>&1
[ -f out/i33/$T-bg-ladder/results.json ] || $B --pairs 20 --controls swap --masks noise --backgrounds --ladder --out out/i33/$T-bg-ladder > out/i33/$T-bg-ladder.log 2>&1
echo done > out/i33/$T.done
