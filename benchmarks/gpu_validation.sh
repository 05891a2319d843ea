#!/usr/bin/env bash
# One prepared run on a lent GPU (torch): calibrate the device, then train the zoo, and write JSON to
# $OUT (or ./gpu_out). Sized to finish well inside 8 minutes on one H100.
#   bash benchmarks/gpu_validation.sh
set -u
out="${OUT:-gpu_out}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/nvidia_smi.csv" 2>&1
timeout 150 python3 -c "
import json, paramcalc.calibrate as c
p = c.measure('cuda', dtypes=('float32', 'tfloat32', 'bfloat16'), progress=print)
c.save(p, '$out/calibration_cuda.json')
" 2>&1 | tee "$out/calibration.log"
timeout 330 python3 benchmarks/train_measure.py --device cuda --out "$out/train_cuda.json" --steps 20 \
  --amp bfloat16 2>&1 | tee "$out/train.log"
echo "done"
