#!/usr/bin/env bash
# Fetch, on a machine with the package registry, the wheels Keras needs on the lent GPU machine (whose
# image has torch, numpy, h5py, ml-dtypes, rich, absl-py and packaging, but not keras, namex, optree),
# for its Python 3.12, into .whl/ (ignored by git; carried to the GPU machine by the device tool).
#   bash benchmarks/fetch_keras_wheels.sh
set -eu
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex optree
ls -l .whl
