import os

# Quiet TensorFlow's C++ logs before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

pytest_plugins = ["pytester"]

# Every answer a meta shape rule gives while a test reads a model is compared with torch's own meta
# kernel (frontends/torch_meta_memo.py): the coverage tests check the rules on every model they read.
from paramcalc.frontends import torch_meta_memo  # noqa: E402

torch_meta_memo.CHECK = True
