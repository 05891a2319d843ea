"""``paramcalc.calibration.sweeps`` on this machine, quick sweeps: the profile it saves loads back and prices every
calibrated part of the step-time model; Keras on its torch backend reuses it (in a child process, since
this one imported Keras on TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import paramcalc  # noqa: E402
from paramcalc.calibration import sweeps as calibrate  # noqa: E402
from paramcalc.core.machine import this_machine  # noqa: E402
from paramcalc.cost.devices import from_calibration  # noqa: E402

KERNELS = ("batch_norm", "layer_norm", "relu", "tanh", "dropout", "max_pool", "avg_pool", "softmax")


# A few matrix products instead of the sweep: what these tests check does not depend on the sweep's
# shapes (benchmarks/ and `paramcalc calibrate` run it whole)
PRODUCTS = [(64, 64, 64), (128, 300, 100), (256, 256, 256)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "cpu.json"
    calibrate.save(calibrate.measure("cpu", quick=True, products=PRODUCTS), str(path))
    return path


def test_quick_cpu_calibration_prices_every_part(saved):
    data = json.loads(saved.read_text())
    assert [(r["m"], r["k"], r["n"]) for r in data["matmul"]["float32"]] == PRODUCTS
    # the machine it describes, and what others took of it meanwhile
    assert data["machine"] == this_machine().to_dict() and data["name"] == this_machine().cpu
    assert 0.0 <= data["contention"]["others_share"] <= 1.0 and data["contention"]["seconds"] > 0
    p = from_calibration(data)
    assert p.machine == this_machine()
    assert p.framework == "torch" and not p.asynchronous and p.overheads_exclude_update
    assert p.page_fault_s_per_byte > 0
    if sys.platform.startswith("linux"):  # glibc: its heap's churn measured on training steps
        assert p.page_churn and all(block >= 2**18 and cost > 0 for block, cost in p.page_churn)
        # where glibc's threshold stands after a first training step: above its 128 KiB default, to 32 MiB
        assert 128 * 2**10 < p.mmap_threshold <= 32 * 2**20
    forward, backward = p.conv_seconds(16 * 32 * 32, 27, 32, "float32")
    assert forward > 0 and backward > 0
    assert all(s > 0 for cell in ("lstm", "gru") for s in p.recurrent_step_seconds(cell, 10**6))
    assert p.recurrent_saved["lstm"] > p.recurrent_saved["gru"] > 4  # more than the output alone
    assert set(p.recurrent_workspace) == {"lstm", "gru"} and min(p.recurrent_workspace.values()) >= 0
    kept = p.transformer_saved  # solved from three layers: each at least a float32 tensor's worth
    assert kept["per_token_feature"] >= 4 and kept["per_token_hidden"] >= 4 and kept["per_score"] >= 4
    # under autocast: measured too, each at least a 16-bit tensor's worth, the LSTM's below float32's
    mixed = p.mixed_memory
    assert set(mixed) == {"recurrent_saved", "recurrent_workspace", "transformer_saved"}
    assert 2 <= mixed["recurrent_saved"]["lstm"] < p.recurrent_saved["lstm"]
    assert min(mixed["transformer_saved"].values()) >= 2
    assert p.update_seconds("adam", [1000, 10]) > p.update_seconds("adam", [10]) > 0
    for dropout in (True, False):  # attention between its projections, as MultiheadAttention runs it
        assert min(p.attention_seconds(8 * 4, 64, 64, 16, dropout, "float32")) > 0
    if sys.platform.startswith("linux"):
        assert json.loads(saved.read_text())["heap"] == "steady"
    assert all(min(p.kernel_seconds(k, 1000, "float32")) > 0 for k in KERNELS)
    nn = torch.nn
    with torch.device("meta"):
        models = [(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.Dropout(0.1), nn.Linear(8 * 15 * 15, 10)), (3, 32, 32)),
                  (nn.LSTM(16, 32, batch_first=True), (10, 16)),
                  (nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), (12, 32))]
    for model, shape in models:
        cost = paramcalc.estimate(model, input_shape=shape, batch_size=8, device=str(saved)).training
        assert cost.step_seconds > 0 and cost.layer_seconds[0][1] > 0


def test_keras_on_torch_reuses_the_torch_profile(saved, tmp_path):
    pytest.importorskip("keras")
    out = tmp_path / "keras_torch.json"
    code = ("import json, paramcalc.calibration.sweeps as c; "
            f"base = json.load(open({str(saved)!r})); "
            f"c.save(c.measure_keras_torch('cpu', quick=True, base=base), {str(out)!r})")
    env = dict(os.environ, KERAS_BACKEND="torch")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=300)
    data = json.loads(out.read_text())
    base = json.loads(saved.read_text())
    assert data["framework"] == "keras-torch" and data["matmul"] == base["matmul"]
    assert data["kind_overheads"] == {} and not data["overheads_exclude_update"]
    assert data["recurrent"] != base["recurrent"]  # Keras' own recurrent layers, measured again
    # Keras' own convolutions (layout changes, bias added apart), batch norm (elementwise operations)
    # and pooling, measured again; torch's other kernels kept
    assert data["convs"] != base["convs"] and set(data["own_layers"]) == {"conv", "batch_norm", "max_pool", "avg_pool"}
    kernels, torch_kernels = data["kernels"]["float32"], base["kernels"]["float32"]
    assert kernels["batch_norm"] != torch_kernels["batch_norm"] and kernels["dropout"] == torch_kernels["dropout"]
    p = from_calibration(data)
    assert p.step_overhead_s > 0 and p.optimizer_seconds["adam"] > 0
    # Keras steps through time itself: each step's slice of the input projection is expanded back to
    # the whole sequence in the backward, a workspace torch's fused kernel does not need
    assert p.recurrent_saved["lstm"] >= 16 and p.recurrent_workspace["lstm"] > 0


ALLOCATIONS_CHILD = """
import json, keras, numpy as np, tensorflow as tf
from paramcalc.calibration import sweeps as calibrate
model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(1024), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
x, y = tf.constant(np.ones((256, 512), "float32")), tf.constant(np.ones((256, 1), "float32"))
model.train_on_batch(x, y)
dense = calibrate.tf_allocations(tf, lambda: model.train_on_batch(x, y))
try:
    calibrate.tf_allocations(tf, lambda: None)
    nothing = "measured"
except calibrate.NoAllocationEvents as error:
    nothing = str(error)
kept = calibrate._recurrent_memory_keras_tf(keras, tf, lambda message: None)
print(json.dumps({"onednn": calibrate.tf_onednn_enabled(), "source": dense.source, "rise": dense.rise,
                  "events": dense.events, "nothing": nothing, "kept": kept}))
"""


@pytest.mark.parametrize("onednn", ["1", "0"])
def test_keras_memory_on_tensorflow_from_its_allocation_events(onednn):
    # TensorFlow runs oneDNN by default only on CPUs with AVX-512 VNNI/BF16 or AMX: with it, requests of
    # 256 KiB and more come from its pool; without it (an AVX2-only CPU), from the plain CPU allocator,
    # whose events exist only while its statistics are on and whose frees carry no size. Both are
    # forced here, in children, so that each path runs on any CPU.
    pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", ALLOCATIONS_CHILD], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["onednn"] is (onednn == "1")
    assert seen["source"] == ("onednn_pool" if onednn == "1" else "cpu_allocator")
    # the step's gradient of the (512, 1024) kernel and Adam's temporaries of its size are held at once
    assert seen["rise"] >= 2 * 512 * 1024 * 4
    # a steady step ends holding about what it started with (its scalars and small buffers change hands)
    assert abs(sum(nbytes for nbytes, _, _ in seen["events"])) <= seen["rise"] // 100
    assert any(nbytes == -512 * 1024 * 4 for nbytes, _, _ in seen["events"])  # frees sized, from either source
    assert "recorded no allocations" in seen["nothing"]  # a step that allocates nothing is refused, not zero
    kept = seen["kept"]  # at least the gates' four floats per unit, and nothing only the backward holds
    assert kept["lstm"]["saved_bytes_per_unit"] >= 16 and kept["gru"]["saved_bytes_per_unit"] >= 12
    assert kept["lstm"]["workspace_bytes_per_unit"] == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap")
def test_steady_heap_keeps_blocks_under_32_mib_paged_in():
    # in a child: the context changes the process's allocator for good (fixed thresholds after it)
    code = """
import ctypes, resource
from paramcalc.calibration.sweeps import steady_heap
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def faults_per_block(n=20, size=4 << 20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n
with steady_heap() as steady:
    faults_per_block()  # the heap grows once
    inside = faults_per_block()
after = faults_per_block()
print(steady, inside, after)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    steady, inside, after = out.stdout.split()
    assert steady == "True"
    assert float(inside) < 16  # reused from the heap: no fresh pages
    assert float(after) > 512  # glibc's default threshold again: mapped afresh (1,024 pages) each time


def test_keras_convolutions_and_kernels_on_tensorflow_price_a_keras_cnn():
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras runs another backend here")
    say = lambda message: None  # noqa: E731
    convs = calibrate._conv_throughput_keras_tf(keras, tf, say, quick=True)
    kernels = calibrate._keras_tf_per_element_costs(keras, tf, say)
    assert [(r["m"], r["k"], r["n"]) for r in convs] == [(16 * 32 * 32, 27, 32), (16 * 32 * 32, 288, 32),
                                                          (16 * 16 * 16, 288, 64), (16 * 16 * 16, 576, 64)]
    assert all(r["forward_s"] > 0 and r["backward_s"] >= r["forward_s"] for r in convs)
    assert set(kernels) == set(KERNELS)
    assert all(k["forward_s_per_element"] > 0 and k["backward_s_per_element"] > 0 for k in kernels.values())
    # dropout draws a random number per element; ReLU only compares
    assert kernels["dropout"]["forward_s_per_element"] > kernels["relu"]["forward_s_per_element"]
    p = from_calibration({"framework": "keras", "matmul": {"float32": [{"m": 64, "k": 64, "n": 64, "seconds": 1e-5}]},
                          "convs": {"float32": convs}, "kernels": {"float32": kernels}})
    L = keras.layers
    model = keras.Sequential([keras.Input((32, 32, 3)), L.Conv2D(32, 3, padding="same", name="conv"),
                              L.BatchNormalization(name="bn"), L.ReLU(), L.GlobalAveragePooling2D(), L.Dense(10)])
    seconds = dict(paramcalc.estimate(model, batch_size=16, device=p).training.layer_seconds)
    measured_first = convs[0]["forward_s"] + convs[0]["backward_s"] / 2  # the first layer: no input gradient
    assert seconds["conv"] == pytest.approx(measured_first)
    bn = kernels["batch_norm"]
    assert seconds["bn"] >= 16 * 32 * 32 * 32 * (bn["forward_s_per_element"] + bn["backward_s_per_element"])


def test_quick_keras_calibration_on_tensorflow_loads_and_prices_a_keras_model(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras runs another backend here")
    path = tmp_path / "keras.json"
    calibrate.save(calibrate.measure_keras(quick=True, products=PRODUCTS), str(path))
    data = json.loads(path.read_text())
    p = from_calibration(data)
    assert p.framework == "keras" and not p.overheads_exclude_update
    assert p.step_overhead_s > 0 and p.layer_overhead_s > 0 and p.optimizer_seconds["adam"] > 0
    assert p.optimizer_alone_seconds["adam"] > 0  # one variable updated with nothing beside it
    assert [(r["m"], r["k"], r["n"]) for r in data["matmul"]["float32"]] == PRODUCTS
    assert all(r["seconds"] > 0 for r in data["matmul"]["float32"]) and len(data["bandwidth"]) == 6
    assert data["machine"] == this_machine().to_dict() and data["contention"]["seconds"] > 0
    # the same shapes read with either operand transposed, as a layer's backward reads them
    for layout in ("transpose_a", "transpose_b"):
        rows = data["matmul_layouts"][layout]["float32"]
        assert [(r["m"], r["k"], r["n"]) for r in rows] == [(r["m"], r["k"], r["n"]) for r in data["matmul"]["float32"]]
        assert p.matmul_layouts[layout]["float32"][0][3] == rows[0]["seconds"] > 0
    assert set(data["kernels"]["float32"]) == set(KERNELS) and len(data["convs"]["float32"]) == 4
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
    cost = paramcalc.estimate(model, batch_size=16, optimizer="adam", device=str(path)).training
    assert cost.framework == "keras" and cost.step_seconds > cost.host_seconds > 0


def test_full_sweeps_time_wide_products_and_quick_ones_do_not():
    from paramcalc.cost.devices import is_wide

    full = calibrate.product_shapes(2048, 8192, 2**18, quick=False)
    wide = [(m, k, n) for m, k, n in full if is_wide(m, n)]
    assert wide == [t for t in calibrate.WIDE if max(t) <= 2**18] and len(wide) == 3
    assert not any(is_wide(m, n) for m, k, n in calibrate.product_shapes(512, 2048, 2**18, quick=True))
    gpu = calibrate.product_shapes(8192, 4 * 8192, 2**21, quick=False)
    assert sum(is_wide(m, n) for m, k, n in gpu) == 6  # 2**21 columns too


def test_sixteen_bit_kernels_are_timed_as_mixed_precision_trains_them():
    # a 32-bit module under autocast on 16-bit activations, never a module converted to 16 bits
    makers = calibrate._torch_kernel_makers(torch, "cpu")
    make, shape = makers["batch_norm"]
    layer = make(torch.bfloat16)
    seen = []
    layer.module.register_forward_pre_hook(lambda module, args: seen.append(torch.is_autocast_enabled("cpu")))
    layer(torch.randn(2, *shape[1:], dtype=torch.bfloat16))
    assert seen == [True] and layer.module.weight.dtype == layer.module.running_mean.dtype == torch.float32
    full = makers["batch_norm"][0](torch.float32)  # 32 bits: the module itself
    assert isinstance(full, torch.nn.BatchNorm2d) and full.weight.dtype == torch.float32
    rows = calibrate._per_element_costs(torch, "cpu", ("bfloat16",), lambda _: None, {"relu": makers["relu"]})
    assert min(rows["bfloat16"]["relu"].values()) > 0


def test_saved_bytes_under_autocast_leave_out_the_weights_copies():
    # a Linear under autocast keeps its input's 16-bit copy and the weight's; the weight's is counted
    # apart by the memory model (est.params x 2 bytes), so the calibration leaves it out
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(16, 64)
    assert calibrate._saved_bytes(torch, layer, x, autocast=torch.bfloat16) == 16 * 64 * 2
    assert calibrate._saved_bytes(torch, layer, x) == 0  # float32: its input and weight only
