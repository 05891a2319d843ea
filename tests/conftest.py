import os

# Quiet TensorFlow's C++ logs before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

pytest_plugins = ["pytester"]
