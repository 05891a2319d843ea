#!/usr/bin/env bash
# One prepared run on a lent GPU (torch): calibrate the device, train the torch zoo, then (when the Keras
# wheels travelled in .whl/, see benchmarks/fetch_keras_wheels.sh) the Keras zoo on Keras' torch
# backend; JSON to $OUT (or ./gpu_out). Sized to finish well inside 8 minutes on one H100: each part
# has its own time limit (170 + 170 + 70 + 80 s), and a part that fails leaves the others' results.
#   bash benchmarks/gpu_validation.sh
# Then, here: python benchmarks/validate.py OUT/train_cuda.json OUT/calibration_cuda.json
#             python benchmarks/validate.py OUT/train_keras_cuda.json OUT/calibration_keras_cuda.json
set -u
out="${OUT:-gpu_out}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/nvidia_smi.csv" 2>&1
timeout 170 python3 -c "
import json, paramcalc.calibrate as c
p = c.measure('cuda', dtypes=('float32', 'tfloat32', 'bfloat16'), progress=print)
c.save(p, '$out/calibration_cuda.json')
" 2>&1 | tee "$out/calibration.log"
timeout 170 python3 benchmarks/train_measure.py --device cuda --out "$out/train_cuda.json" --steps 20 \
  --amp bfloat16 2>&1 | tee "$out/train.log"
if ls .whl/keras-*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/keras_site \
    .whl/*.whl && \
  export PYTHONPATH="/tmp/keras_site:$PYTHONPATH" KERAS_BACKEND=torch
  timeout 70 python3 -c "
import json, paramcalc.calibrate as c
base = json.load(open('$out/calibration_cuda.json'))
c.save(c.measure_keras_torch('cuda', base=base, progress=print), '$out/calibration_keras_cuda.json')
" 2>&1 | tee "$out/calibration_keras.log"
  timeout 80 python3 benchmarks/train_measure_keras.py --backend torch --device cuda --steps 20 \
    --out "$out/train_keras_cuda.json" 2>&1 | tee "$out/train_keras.log"
fi
echo "done"
