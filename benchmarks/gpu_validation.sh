#!/usr/bin/env bash
# One prepared run on a lent GPU (torch): calibrate the device, train the torch zoo, then (when the Keras
# wheels travelled in .whl/, see benchmarks/fetch_keras_wheels.sh) the Keras zoo on Keras' torch
# backend; JSON to $OUT (or ./gpu_out). Sized to finish well inside 8 minutes on one H100: each part
# has its own time limit (170 + 170 + 70 + 80 s), and a part that fails leaves the others' results.
#   bash benchmarks/gpu_validation.sh
# PYTHON (default python3), DEVICE (default cuda) and SMOKE=1 rehearse it elsewhere: tests/test_gpu_script.py
# runs every part on the CPU in about 30 s.
# Then, here: python benchmarks/validate.py OUT/train_cuda.json OUT/calibration_cuda.json
#             python benchmarks/validate.py OUT/train_keras_cuda.json OUT/calibration_keras_cuda.json
set -u
out="${OUT:-gpu_out}"
py="${PYTHON:-python3}"
device="${DEVICE:-cuda}"
# SMOKE=1: a rehearsal of every part in about a minute (quick sweeps, one small model each), e.g. on a
# CPU before a lent GPU's minutes are spent: SMOKE=1 DEVICE=cpu PYTHON=.venv/bin/python bash ...
if [ -n "${SMOKE:-}" ]; then
  quick=True; dtypes="('float32',)"; only="--only mlp_w128_b16"; only_keras="--only keras_mlp_w512"; steps=3
  products="[(64, 64, 64), (256, 256, 256)]"
else
  quick=False; dtypes="('float32', 'tfloat32', 'bfloat16')"; only=""; only_keras=""; steps=20; products=None
fi
amp=""
[ "$device" = cuda ] && amp="--amp bfloat16"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/nvidia_smi.csv" 2>&1
timeout 170 "$py" -c "
import json, paramcalc.calibration.sweeps as c
p = c.measure('$device', dtypes=$dtypes, quick=$quick, progress=print, products=$products)
c.save(p, '$out/calibration_$device.json')
" 2>&1 | tee "$out/calibration.log"
timeout 170 "$py" benchmarks/train_measure.py --device "$device" --out "$out/train_$device.json" --steps $steps \
  $amp $only 2>&1 | tee "$out/train.log"
keras_ready=""
if "$py" -c "import keras" > /dev/null 2>&1; then
  keras_ready=1
elif ls .whl/keras-*.whl > /dev/null 2>&1; then  # the lent machine has no Keras: the carried wheels
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/keras_site \
    .whl/*.whl && export PYTHONPATH="/tmp/keras_site:$PYTHONPATH" && keras_ready=1
fi
if [ -n "$keras_ready" ]; then
  export KERAS_BACKEND=torch
  timeout 70 "$py" -c "
import json, paramcalc.calibration.sweeps as c
base = json.load(open('$out/calibration_$device.json'))
c.save(c.measure_keras_torch('$device', base=base, quick=$quick, progress=print), '$out/calibration_keras_$device.json')
" 2>&1 | tee "$out/calibration_keras.log"
  timeout 80 "$py" benchmarks/train_measure_keras.py --backend torch --device "$device" --steps $steps $only_keras \
    --out "$out/train_keras_$device.json" 2>&1 | tee "$out/train_keras.log"
fi
echo "done"
