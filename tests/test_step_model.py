"""The step-time model's calibrated parts (optimizer updates by tensor count and size, convolutions,
per-element kernels, fresh pages on CPU hosts) and the update's temporaries in the memory model.

Profiles here are built by hand so that every expected figure follows from the table given."""

from __future__ import annotations

from dataclasses import replace

import pytest

from paramcalc import (
    Activation,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    Pool,
    Recurrent,
    Sequential,
    estimate,
    training_cost,
)
from paramcalc.core.work import SavingRules
from paramcalc.cost.devices import BUILTIN, from_calibration
from paramcalc.cost.paging import MMAP_CEILING
from paramcalc.cost.timing import PAIR_OPS

CPU = BUILTIN["cpu"]
# Adam over 64 one-element tensors: 1e-5 s each; 1 ns per parameter at 4,096 parameters, 2 ns at 65,536
ADAM_ROWS = [(64, 64, 64e-5), (8, 4096, 8e-5 + 4096e-9), (8, 65536, 8e-5 + 65536 * 2e-9)]


def _profile(**fields):
    return replace(CPU, **fields)


def _cost(layers, shape, batch, profile, optimizer="adam"):
    est = estimate(Sequential(layers), input_shape=shape, batch_size=batch)
    return training_cost(est, optimizer=optimizer, device=profile)


def test_update_priced_per_tensor_and_per_parameter_by_size():
    p = _profile(optimizer_sizes={"adam": ADAM_ROWS})
    assert p.update_seconds("adam", [4000, 96]) == pytest.approx(2e-5 + 4096e-9)
    assert p.update_seconds("adam", [65536]) == pytest.approx(1e-5 + 65536 * 2e-9)
    # log-linear between the measured totals, flat beyond them
    assert p.update_seconds("adam", [16384]) == pytest.approx(1e-5 + 16384 * 2**0.5 * 1e-9)
    assert p.update_seconds("adam", [10**6]) == pytest.approx(1e-5 + 10**6 * 2e-9)
    assert p.update_seconds("sgd", [10]) is None  # not calibrated: the per-parameter figure is used


def test_step_takes_the_calibrated_update_of_the_model_tensors():
    p = _profile(optimizer_sizes={"adam": ADAM_ROWS}, overheads_exclude_update=True)
    cost = _cost([Dense(10), Dense(5)], (100,), 8, p)
    assert dict(cost.layer_seconds)["adam update"] == pytest.approx(p.update_seconds("adam", [1000, 10, 50, 5]))


def test_convolutions_priced_from_measured_convolutions():
    # one measured convolution: 1,024 positions x 27 inputs x 16 filters, 1 ms forward, 3 ms backward
    p = _profile(convs={"float32": [(1024, 27, 16, 1e-3, 3e-3)]})
    cost = _cost([Conv(16, 3, padding="same", use_bias=False, name="first"),
                  Conv(16, 3, padding="same", use_bias=False, name="second")], (32, 32, 3), 1, p)
    seconds = dict(cost.layer_seconds)
    assert seconds["first"] == pytest.approx(1e-3 + 3e-3 / 2)  # no input gradient for the first layer
    scale = (16 * 9) / 27  # the second reads 16 channels at the same measured rate
    assert seconds["second"] == pytest.approx(scale * (1e-3 + 3e-3))


def test_per_element_kernels_and_their_fallback():
    kernels = {"float32": {"dropout": {"forward_s_per_element": 5e-9, "backward_s_per_element": 1e-9},
                           "relu": {"forward_s_per_element": 3e-10, "backward_s_per_element": 4e-10}}}
    p = _profile(kernels=kernels)
    layers = [Dense(64), Activation("relu", name="act"), Dropout(0.1, name="drop"), Dense(1)]
    seconds = dict(_cost(layers, (32,), 100, p).layer_seconds)
    assert seconds["drop"] == pytest.approx(6400 * 6e-9)
    assert seconds["act"] == pytest.approx(6400 * 7e-10)  # slower than moving its bytes at 40 GB/s
    uncalibrated = dict(_cost(layers, (32,), 100, CPU).layer_seconds)["drop"]
    assert uncalibrated == pytest.approx(CPU.memory_seconds(6400 * 4 * 2) * (1 + 1.5))  # a pass, 1.5 back


def test_tanh_takes_its_own_kernel_where_calibrated_and_relus_where_not():
    relu = {"relu": {"forward_s_per_element": 3e-10, "backward_s_per_element": 4e-10}}
    tanh = {"tanh": {"forward_s_per_element": 1.3e-9, "backward_s_per_element": 5e-10}}
    layers = [Dense(64), Activation("tanh", name="act"), Dense(1)]
    seconds = dict(_cost(layers, (32,), 100, _profile(kernels={"float32": {**relu, **tanh}})).layer_seconds)
    assert seconds["act"] == pytest.approx(6400 * 1.8e-9)
    # a profile calibrated before tanh was measured apart times it as it did then, as ReLU
    older = dict(_cost(layers, (32,), 100, _profile(kernels={"float32": relu})).layer_seconds)
    assert older["act"] == pytest.approx(6400 * 7e-10)


def test_operations_recorded_from_a_forward_take_the_kernels_of_their_functions():
    """A dropout recorded as its ATen operations is timed at its random fill (``bernoulli_``), with the
    calibrated dropout kernel; a recorded tanh with the tanh kernel."""
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(32, 64)

        def forward(self, x):
            if x.shape[-1] != 32:  # a branch on a size: read by running the forward
                raise ValueError(x.shape)
            return torch.nn.functional.dropout(torch.tanh(self.linear(x)), 0.1, training=True)

    kernels = {"float32": {"dropout": {"forward_s_per_element": 5e-9, "backward_s_per_element": 1e-9},
                           "tanh": {"forward_s_per_element": 1.3e-9, "backward_s_per_element": 5e-10}}}
    with torch.device("meta"):
        model = Block()
    est = estimate(model, input_shape=(32,), batch_size=100)
    seconds = dict(training_cost(est, optimizer="sgd", device=_profile(kernels=kernels)).layer_seconds)
    fill = next(r.name for r in est.layers if r.type == "bernoulli_")
    activation = next(r.name for r in est.layers if r.type == "tanh")
    assert seconds[fill] == pytest.approx(6400 * 5e-9)  # its output needs no gradient: no backward
    assert seconds[activation] == pytest.approx(6400 * 1.8e-9)


def test_a_calibrated_kernel_is_no_faster_than_moving_its_bytes():
    # measured on a tensor in cache at 10 ps per element: a large one still reads and writes its bytes
    fast = {"float32": {"relu": {"forward_s_per_element": 1e-11, "backward_s_per_element": 1e-11}}}
    layers = [Dense(4096), Activation("relu", name="act")]
    seconds = dict(_cost(layers, (8,), 4096, _profile(kernels=fast)).layer_seconds)["act"]
    n = 4096 * 4096
    assert seconds == pytest.approx(CPU.memory_seconds(n * 4 * 2) + CPU.memory_seconds(int(n * 4 * 2 * 1.5)))


def test_dropout_rate_reaches_transformer_timing():
    torch = pytest.importorskip("torch")
    kernels = {"float32": {"dropout": {"forward_s_per_element": 5e-9, "backward_s_per_element": 1e-9}}}
    p = _profile(kernels=kernels)
    times = []
    for rate in (0.0, 0.1):
        with torch.device("meta"):
            layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=rate, batch_first=True)
        est = estimate(layer, input_shape=(16, 32), batch_size=4)
        assert est.layers[0].layer.dropout == rate
        times.append(training_cost(est, device=p).device_seconds)
    b, t, e, f, h = 4, 16, 32, 64, 4
    dropped = b * h * t * t + 2 * b * t * e + b * t * f  # probabilities, both block outputs, FF hidden
    assert times[1] - times[0] == pytest.approx(dropped * 6e-9)


def test_fresh_blocks_are_paged_in_on_cpu_hosts():
    p = _profile(page_fault_s_per_byte=1e-10)
    units = MMAP_CEILING // 4 // 64 + 1  # a batch of 64 outputs just over the ceiling
    layers = [Dense(units, name="wide"), Dense(1, name="head")]
    with_faults = _cost(layers, (1,), 64, p, optimizer="sgd")
    without = _cost(layers, (1,), 64, CPU, optimizer="sgd")
    fresh = 64 * units * 4  # the wide output forward and its gradient backward
    # below the ceiling, the largest blocks (the wide kernel's, its bias' and the head kernel's gradients,
    # units floats each) sit at the allocator's threshold: paged in again in the backward pass
    threshold_blocks = 3 * units * 4
    assert with_faults.device_seconds - without.device_seconds == pytest.approx((2 * fresh + threshold_blocks) * 1e-10)
    gpu = replace(BUILTIN["h100-sxm"], page_fault_s_per_byte=1e-10)  # device memory: no such pages
    assert _cost(layers, (1,), 64, gpu).step_seconds == _cost(layers, (1,), 64, BUILTIN["h100-sxm"]).step_seconds


def test_heap_blocks_churned_in_a_step_take_the_cost_measured_on_training_steps():
    # the same step as above: its heap's blocks at the cost measured on training steps for their size
    # (3e-10 s per byte at 1 MiB and below, 2e-10 at 4 MiB and above, log-log between), the blocks
    # mapped apart past the ceiling at the 1e-10 measured on such blocks
    p = _profile(page_fault_s_per_byte=1e-10, page_churn=((2**20, 3e-10), (4 * 2**20, 2e-10)))
    assert p.page_in_seconds(2**19, churned=True) == pytest.approx(2**19 * 3e-10)
    assert p.page_in_seconds(2 * 2**20, churned=True) == pytest.approx(2 * 2**20 * (6e-20) ** 0.5)
    assert p.page_in_seconds(2 * 2**20, churned=False) == pytest.approx(2 * 2**20 * 1e-10)
    units = MMAP_CEILING // 4 // 64 + 1
    layers = [Dense(units, name="wide"), Dense(1, name="head")]
    cost = _cost(layers, (1,), 64, p, optimizer="sgd")
    mapped, heap = 2 * 64 * units * 4, 3 * units * 4  # heap blocks of units floats: under 1 MiB
    assert cost.paged_in_seconds == pytest.approx(mapped * 1e-10 + heap * 3e-10)
    assert cost.paged_in_bytes == mapped + heap and cost.largest_paged_block == 64 * units * 4
    unmeasured = _cost(layers, (1,), 64, replace(p, page_churn=()), optimizer="sgd")
    assert unmeasured.paged_in_seconds == pytest.approx((mapped + heap) * 1e-10)  # one cost for every block


def test_the_largest_heap_blocks_churn_only_once_together_they_reach_glibcs_trim_threshold():
    """glibc trims its heap when twice its mmap threshold lies free at the top: the step's largest heap
    blocks are handed back (and paged in again) when, freed together, they reach twice the larger of
    their size and where the process started the threshold; fewer, the heap keeps them. Blocks mapped
    apart past the ceiling are paged in whatever the threshold."""
    units = MMAP_CEILING // 4 // 64 + 1
    layers = [Dense(units, name="wide"), Dense(1, name="head")]
    p = _profile(page_fault_s_per_byte=1e-10)
    mapped, heap = 2 * 64 * units * 4, 3 * units * 4  # three blocks of units floats (513 KiB) at the top
    assert _cost(layers, (1,), 64, p, optimizer="sgd").paged_in_bytes == mapped + heap
    reached = _cost(layers, (1,), 64, replace(p, mmap_threshold=heap // 2), optimizer="sgd")
    assert reached.paged_in_bytes == mapped + heap
    kept = _cost(layers, (1,), 64, replace(p, mmap_threshold=heap // 2 + 1), optimizer="sgd")
    assert kept.paged_in_bytes == mapped and kept.paged_in_seconds == pytest.approx(mapped * 1e-10)
    # one such block alone never reaches twice its own size: the heap keeps a lone kernel's gradient
    one = _cost([Dense(units, use_bias=False, name="wide")], (1,), 64, p, optimizer="sgd")
    assert one.paged_in_bytes == 64 * units * 4  # the wide output alone, mapped apart
    older = {"device": "cpu", "matmul": {"float32": [{"m": 64, "k": 64, "n": 64, "seconds": 1e-5}]},
             "page_fault_s_per_byte": 1e-10}
    assert from_calibration({**older, "mmap_threshold_bytes": 2015232}).mmap_threshold == 2015232
    assert from_calibration(older).mmap_threshold == 0  # not measured: glibc's default, as before


def test_the_loss_runs_its_kernels_and_its_blocks_join_the_pages_of_the_step():
    """A language model's cross-entropy runs a log-softmax over the logits and its backward (the softmax
    kernel); what it keeps and the two gradients it makes are blocks of the logits' size, the step's
    largest, which the heap hands back and pages in again."""
    softmax = {"float32": {"softmax": {"forward_s_per_element": 5e-10, "backward_s_per_element": 7e-10}}}
    p = _profile(kernels=softmax, page_fault_s_per_byte=1e-10)
    layers = [Dense(64), Dense(1000, name="logits")]
    est = estimate(Sequential(layers), input_shape=(32,), batch_size=512)
    plain = training_cost(est, optimizer="sgd", device=p)
    with_loss = training_cost(est, optimizer="sgd", device=p, loss="cross_entropy")
    logits = 512 * 1000
    assert dict(with_loss.layer_seconds)["cross_entropy loss"] == pytest.approx(logits * 1.2e-9)
    assert "cross_entropy loss" not in dict(plain.layer_seconds)
    # the log-softmax kept, then two gradients made in the backward, each at the threshold: the two paged again
    assert with_loss.paged_in_bytes - plain.paged_in_bytes == 2 * logits * 4
    mse = training_cost(est, optimizer="sgd", device=p, loss="mse")
    passes = logits * 4 * 2
    assert dict(mse.layer_seconds)["mse loss"] == pytest.approx(p.memory_seconds(passes) + p.memory_seconds(int(passes * 1.5)))


def test_a_single_heap_churn_figure_from_an_earlier_calibration_still_loads():
    p = from_calibration({"device": "cpu", "matmul": {"float32": [{"m": 64, "k": 64, "n": 64, "seconds": 1e-5}]},
                          "page_fault_s_per_byte": 1e-10, "page_churn_s_per_byte": 3e-10})
    assert p.page_in_seconds(10**6, churned=True) == pytest.approx(10**6 * 3e-10)


def test_the_largest_tensors_temporaries_are_paged_in_when_they_set_the_threshold():
    p = _profile(page_fault_s_per_byte=1e-10)
    # 512x512 weights (1 MiB) are the largest blocks of the step: Adam's two temporaries of each fault
    layers = [Dense(512), Dense(512), Dense(512), Dense(10)]
    update = dict(_cost(layers, (512,), 16, p).layer_seconds)["adam update"]
    base = dict(_cost(layers, (512,), 16, CPU).layer_seconds)["adam update"]
    assert update - base == pytest.approx(3 * 2 * 512 * 512 * 4 * 1e-10)
    # a batch whose activations outgrow the weights moves the threshold: no fault in the update
    update = dict(_cost(layers, (512,), 1024, p).layer_seconds)["adam update"]
    assert update == pytest.approx(dict(_cost(layers, (512,), 1024, CPU).layer_seconds)["adam update"])
    # Keras' Adam on torch keeps three lists of temporaries (m x alpha, sqrt(v) + eps, the quotient)
    keras = replace(p, framework="keras-torch")
    update = dict(_cost(layers, (512,), 16, keras).layer_seconds)["adam update"]
    base = dict(_cost(layers, (512,), 16, replace(CPU, framework="keras-torch")).layer_seconds)["adam update"]
    assert update - base == pytest.approx(3 * 3 * 512 * 512 * 4 * 1e-10)


def test_update_temporaries_follow_the_device():
    # batch 1: the update is the peak; Adam's loop (CPUs) holds two temporaries of the largest tensor,
    # its foreach kernels (GPUs, and the default without a device) one of every tensor at once
    est = estimate(Sequential([Dense(300), Dense(100), Flatten(), Dense(1)]), input_shape=(2000,), batch_size=1)
    sizes = [2000 * 300, 300, 300 * 100, 100, 100, 1]
    static = 16 * sum(sizes)  # weights, gradients, two moments
    batch = 2000 * 4
    assert training_cost(est, device="cpu").memory.peak == static + 2 * 4 * max(sizes) + batch
    assert training_cost(est, device="h100-sxm").memory.peak == static + 4 * sum(sizes) + batch
    assert training_cost(est).memory.peak == static + 4 * sum(sizes) + batch


def test_old_calibrations_still_load():
    data = {"device": "cpu", "matmul": {"float32": [{"m": 64, "k": 64, "n": 64, "seconds": 1e-5}]},
            "bandwidth": [{"bytes": 2**20, "seconds": 1e-4}], "op_overhead_s": 2e-6,
            "norms": {"float32": {"layer_norm": {"forward_s_per_element": 1e-10, "backward_s_per_element": 2e-10}}},
            "optimizers": {"adam": {"seconds_per_param": 1e-9, "params": 2**22}}}
    p = from_calibration(data)
    assert p.kernel_seconds("layer_norm", 10, "float32") == pytest.approx((1e-9, 2e-9))
    assert p.update_seconds("adam", [10]) is None and not p.overheads_exclude_update
    assert p.page_fault_s_per_byte == 0.0


def test_recurrent_layers_step_through_time_at_the_measured_rate():
    # LSTM layers measured at 1e6 and 1e7 FLOPs per step: 10 and 50 us forward, 20 and 100 backward
    p = _profile(recurrent={"lstm": [(10**6, 1e-5, 2e-5), (10**7, 5e-5, 1e-4)]}, kind_overheads={"rnn": 1.0})
    est = estimate(Sequential([Recurrent(cell="lstm", units=64, return_sequences=True, name="rnn")]),
                   input_shape=(10, 61), batch_size=16)
    work = 2 * 16 * (61 + 64) * 4 * 64  # 1,024,000 FLOPs per step, just past the first row
    cost = training_cost(est, device=p)
    forward, backward = p.recurrent_step_seconds("lstm", work)
    assert 1e-5 < forward < 1.1e-5 and 2e-5 < backward < 2.2e-5
    assert dict(cost.layer_seconds)["rnn"] == pytest.approx(10 * (forward + backward))
    assert cost.host_seconds < 1.0  # the measured layers hold their host cost: no per-kind cost on top
    assert p.recurrent_step_seconds("lstm", 10**8) == pytest.approx((5e-4, 1e-3))  # past the sweep: its rate
    assert p.recurrent_step_seconds("gru", work) is None


def test_a_compiled_keras_step_updates_each_layer_inside_the_backward():
    # TensorFlow's graph runs a variable's update as soon as its gradient exists and frees both (its
    # allocator's events): the peak holds one layer's gradients and update buffers, not all of them
    est = estimate(Sequential([Dense(300), Dense(1)]), input_shape=(2000,), batch_size=1)
    keras_cpu = replace(CPU, framework="keras")
    kernel, first_layer = 2000 * 300, 2000 * 300 + 300
    resident = 12 * est.trainable_params + 2000 * 4  # weights and two moments; the batch
    # the first Dense, updated last: its output's gradient, its own gradients, and Adam's two moment
    # chains side by side (one buffer of the kernel each); the second Dense's update may still be
    # running (its 301 gradients and one buffer of its kernel); gradients of layers before it are gone
    second_updating = 4 * 301 + 4 * 300
    assert training_cost(est, device=keras_cpu).memory.peak == \
        resident + 300 * 4 + 4 * first_layer + 2 * 4 * kernel + second_updating
    static = 16 * est.trainable_params + 2000 * 4  # eager: every gradient stays until the update
    assert training_cost(est, device="cpu").memory.peak == static + 2 * 4 * 2000 * 300  # torch's loop


def test_recurrent_workspace_measured_on_the_device_replaces_the_generic_rule():
    # a GRU (torch runs oneDNN's kernel for LSTMs only, whose own rule is exact on a CPU)
    est = estimate(Sequential([Recurrent(cell="gru", units=64, return_sequences=True, num_layers=2,
                                         layout="torch", name="rnn")]), input_shape=(10, 32), batch_size=16)
    generic = training_cost(est, device=CPU).memory.activations
    measured = training_cost(est, device=_profile(recurrent_saved={"gru": 70.0})).memory.activations
    assert measured == 2 * int(70.0 * 16 * 10 * 64)  # two layers, kernel-kept bytes per batch x step x unit
    assert generic == (2 * 16 * 10 * 64 * 5 + 16 * 10 * 64) * 4  # gates and states per step, layer inputs
    # dropout between the layers: the second reads a tensor of its own, and the noise that made it is kept
    dropped = estimate(Sequential([Recurrent(cell="gru", units=64, return_sequences=True, num_layers=2,
                                             layout="torch", dropout=0.5, name="rnn")]), input_shape=(10, 32),
                       batch_size=16)
    noise = 16 * 10 * 64 * 4
    assert training_cost(dropped, device=CPU).memory.activations == generic + noise
    assert training_cost(dropped, device=_profile(recurrent_saved={"gru": 70.0})).memory.activations \
        == measured + 2 * noise


def test_recurrent_backward_workspace_is_held_while_that_layer_runs_its_backward():
    est = estimate(Sequential([Recurrent(cell="lstm", units=64, return_sequences=True, name="rnn"), Dense(8)]),
                   input_shape=(10, 32), batch_size=16)
    kept = _profile(recurrent_saved={"lstm": 30.0})
    with_workspace = _profile(recurrent_saved={"lstm": 30.0}, recurrent_workspace={"lstm": 48.0})
    without, held = training_cost(est, device=kept).memory, training_cost(est, device=with_workspace).memory
    assert held.activations == without.activations  # not kept from the forward: nothing saved changes
    # the LSTM's backward sets the peak either way, now with 48 bytes per batch x step x unit on top
    assert held.peak - without.peak == int(48.0 * 16 * 10 * 64)


def test_a_fused_activation_frees_the_layers_output_before_its_weight_and_input_gradients():
    # Dense(300, relu) on 100 positions of 2,000 features: the ReLU's backward is the last to read the
    # 300-wide output, so the product's gradients are made after that output is freed
    est = estimate(Sequential([Dense(300, activation="relu"), Dense(1)]), input_shape=(100, 2000), batch_size=4)
    params, out, x = est.trainable_params, 4 * 100 * 300 * 4, 4 * 100 * 2000 * 4
    first, kernel = 2000 * 300 + 300, 2000 * 300
    graph = training_cost(est, device=replace(CPU, framework="keras")).memory
    # Keras on TensorFlow: the ReLU's gradient (written over the incoming one), the first Dense's own
    # gradients and Adam's two moment chains, the second's update perhaps still running; the output is
    # gone (it would add 480,000 bytes)
    assert graph.peak == 12 * params + x + out + 4 * first + 2 * 4 * kernel + 4 * 301 + 4 * 300
    eager = training_cost(est, optimizer="sgd", device=CPU).memory  # no optimizer state, no update buffers
    # torch's eager step: the ReLU's gradient beside every weight gradient
    assert eager.peak == 4 * params + x + out + 4 * params


def test_keras_on_torch_keeps_channels_first_copies_and_a_centred_batch():
    # Keras hands torch a channels-first copy of a channels-last input (convolutions, max pools) and
    # builds BatchNormalization from elementwise operations that keep the centred input
    est = estimate(Sequential([Conv(8, 3, padding="same"), BatchNorm(), Activation("relu"), Pool(op="max")]),
                   input_shape=(16, 16, 3), batch_size=4)
    image, features = 4 * 16 * 16 * 3 * 4, 4 * 16 * 16 * 8 * 4
    on_torch = training_cost(est, device=CPU).memory.activations
    keras_torch = training_cost(est, device=replace(CPU, framework="keras-torch")).memory.activations
    # the convolution's copy of the image, the centred batch, the pool's copy of the ReLU's output
    # (the ReLU keeps that output itself)
    assert keras_torch - on_torch == image + features + features


def test_memory_follows_the_framework_that_trains():
    from paramcalc import ParamcalcError, seed_model

    def peak(**options):
        return estimate(seed_model("flat", 2000), batch_size=128, optimizer="adam", **options).training.memory.peak
    # a Keras model with no calibrated device trains as Keras does: on TensorFlow unless told otherwise
    assert peak() == peak(keras_backend="tensorflow") == peak(device=replace(CPU, framework="keras"))
    assert peak(keras_backend="torch") == peak(device=replace(CPU, framework="keras-torch"))
    assert peak(keras_backend="torch") != peak()
    # a calibrated profile names the framework it measured, whatever the backend given
    assert peak(keras_backend="torch", device=replace(CPU, framework="torch")) == \
        peak(device=replace(CPU, framework="torch"))
    with pytest.raises(ParamcalcError, match="keras_backend"):
        peak(keras_backend="mxnet")
    torch_model = Sequential([Dense(4)], input_shape=(8,), framework="torch")
    with pytest.raises(ParamcalcError, match="applies to Keras models"):
        estimate(torch_model, batch_size=2, optimizer="adam", keras_backend="torch")


def test_measured_bytes_per_element_stay_whole_bytes():
    p = _profile(recurrent_saved={"lstm": 77.1875}, recurrent_workspace={"lstm": 17.0625})
    est = estimate(Sequential([Recurrent(cell="lstm", units=16, return_sequences=True)]), input_shape=(10, 8))
    # a symbolic batch gives memory as a formula by the device's rules, and no time yet (it used to
    # fail inside the memory model on float x B)
    symbolic = training_cost(est, device=p)
    assert symbolic.step_seconds is None and symbolic.device == p.name
    memory = training_cost(est.subs(B=32), device=p).memory
    assert type(memory.peak) is int and memory.activations == 77 * 32 * 10 * 16
    assert symbolic.memory.activations.subs({"B": 32}) == memory.activations
    assert symbolic.memory.peak.subs({"B": 32}) >= memory.peak  # the formula's peak bounds it from above
    noted = estimate(Sequential([Recurrent(cell="lstm", units=16)]), input_shape=(10, 8), device=p, optimizer="adam")
    assert noted.training.step_seconds is None and any("concrete batch size" in n for n in noted.notes)


def test_transformer_activations_measured_on_the_device():
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        layer = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2,
                                            enable_nested_tensor=False)
    est = estimate(layer, input_shape=(16, 32), batch_size=4)
    kept = {"per_token_feature": 48.0, "per_token_hidden": 12.0, "per_score": 12.0}
    measured = training_cost(est, device=_profile(transformer_saved=kept)).memory.activations
    b, t, e, f, h = 4, 16, 32, 64, 4
    assert measured == 2 * (48 * b * t * e + 12 * b * t * f + 12 * b * h * t * t)
    # bf16 activations are not what was calibrated: the generic rule applies
    mixed = training_cost(est, precision="mixed_bfloat16", device=_profile(transformer_saved=kept))
    assert mixed.memory.activations == training_cost(est, precision="mixed_bfloat16", device=CPU).memory.activations
    # unless the calibration measured the layer under autocast too
    kept_mixed = {"per_token_feature": 24.0, "per_token_hidden": 7.0, "per_score": 13.0}
    both = _profile(transformer_saved=kept, mixed_memory={"transformer_saved": kept_mixed})
    cast_input = 2 * b * t * e  # the layer reads the model's input: autocast keeps a 16-bit copy of it
    assert training_cost(est, precision="mixed_bfloat16", device=both).memory.activations == \
        2 * (24 * b * t * e + 7 * b * t * f + 13 * b * h * t * t) + cast_input
    assert training_cost(est, device=both).memory.activations == measured  # float32 keeps its own


def test_recurrent_layers_keep_what_was_measured_under_autocast():
    est = estimate(Sequential([Recurrent(cell="lstm", units=16, return_sequences=True)]), input_shape=(10, 8),
                   batch_size=4)
    units = 4 * 10 * 16
    float32_only = _profile(recurrent_saved={"lstm": 77.0}, recurrent_workspace={"lstm": 17.0})
    both = replace(float32_only, mixed_memory={"recurrent_saved": {"lstm": 53.0},
                                               "recurrent_workspace": {"lstm": 5.0}})

    def kept(profile, precision):
        return training_cost(est, precision=precision, device=profile).memory.activations
    # the layer's input is the model's: float32 counts it apart, autocast keeps a 16-bit copy of it
    assert kept(both, "float32") == kept(float32_only, "float32") == 77 * units
    assert kept(both, "mixed_bfloat16") == 53 * units + 2 * 4 * 10 * 8
    assert kept(float32_only, "mixed_bfloat16") == 77 * units + 2 * 4 * 10 * 8  # unmeasured: float32's, a bound


def test_bias_gradient_is_a_reduction_over_the_output_gradient():
    with_bias = dict(_cost([Dense(8), Dense(300, name="wide")], (4,), 1000, CPU).layer_seconds)["wide"]
    without = dict(_cost([Dense(8), Dense(300, use_bias=False, name="wide")], (4,), 1000, CPU).layer_seconds)["wide"]
    assert with_bias - without == pytest.approx(CPU.memory_seconds(1000 * 300 * 4))


def test_misaligned_products_take_the_rate_of_misaligned_measurements():
    # bf16: 256-wide products measured at 400 TFLOP/s, 300-wide (not a multiple of 8) at 200
    rows = [(4096, 256, 256, 2 * 4096 * 256 * 256 / 400e12), (4096, 300, 300, 2 * 4096 * 300 * 300 / 200e12)]
    p = replace(BUILTIN["h100-sxm"], matmul={"bfloat16": rows}, launch_floor_s=0.0, op_overhead_s=0.0)

    def rate(k):
        return 2 * 4096 * k * k / p.matmul_seconds(4096, k, k, "bfloat16")
    assert rate(296) == pytest.approx(400e12, rel=0.05)  # a multiple of 8, next to the 256-wide ones
    assert rate(292) == pytest.approx(200e12, rel=0.05)  # not one: the misaligned measurement's rate


# Tall (2**18 x 128 x 300) measured at 170 GFLOP/s, the same work shaped wide (300 x 128 x 2**18, a wide
# layer's weight gradient in torch) at 130: the smaller output side (300) is the same for both
TALL_AND_WIDE = [(2**18, 128, 300, 2 * 2**18 * 128 * 300 / 170e9), (300, 128, 2**18, 2 * 300 * 128 * 2**18 / 130e9)]


def test_wide_products_take_the_rate_of_wide_measurements_where_the_profile_has_them():
    p = replace(CPU, matmul={"float32": TALL_AND_WIDE}, launch_floor_s=0.0, op_overhead_s=0.0)

    def rate(profile, m, k, n):
        return 2 * m * k * n / profile.matmul_seconds(m, k, n, "float32")
    assert rate(p, 600000, 128, 300) == pytest.approx(170e9, rel=0.02)
    assert rate(p, 300, 128, 600000) == pytest.approx(130e9, rel=0.02)
    # a profile that measured no wide product prices both from the rows it has, as before
    old = replace(p, matmul={"float32": [TALL_AND_WIDE[0], (2**18, 256, 256, 2 * 2**18 * 256 * 256 / 190e9)]})
    assert rate(old, 300, 128, 600000) == pytest.approx(rate(old, 600000, 128, 300), rel=0.02)


def test_torchs_weight_gradient_of_a_wide_layer_is_a_wide_product():
    # torch makes dW = dy^T @ x: (out x batch) @ (batch x in), wide when the input is; Keras x^T @ dy, tall.
    # A first layer (no input gradient): its step differs between the two by that product alone.
    p = replace(CPU, matmul={"float32": TALL_AND_WIDE}, launch_floor_s=0.0, op_overhead_s=0.0)
    est = estimate(Sequential([Dense(300, name="wide")]), input_shape=(600000,), batch_size=128)
    seconds = {fw: dict(training_cost(est, optimizer="sgd", device=replace(p, framework=fw)).layer_seconds)["wide"]
               for fw in ("torch", "keras")}
    wide, tall = p.matmul_seconds(300, 128, 600000, "float32"), p.matmul_seconds(600000, 128, 300, "float32")
    assert wide == pytest.approx(tall * 170 / 130, rel=0.02)
    assert seconds["torch"] - seconds["keras"] == pytest.approx(wide - tall)


def test_cpu_page_churn_is_explained_with_its_fix():
    from paramcalc import estimate as run

    layers = [Dense(512), Dense(512), Dense(512), Dense(10)]
    p = _profile(page_fault_s_per_byte=1e-9)  # paging dominates this step
    est = run(Sequential(layers), input_shape=(256,), batch_size=16, device=p)
    found = [d for d in est.diagnostics if d.code == "cpu-page-churn"]
    assert len(found) == 1 and "1,048,576 bytes" in found[0].message
    assert "MALLOC_MMAP_THRESHOLD_=33554432" in found[0].fix
    assert est.training.paged_in_seconds >= 0.2 * est.training.step_seconds
    assert est.training.largest_paged_block == 512 * 512 * 4
    quiet = run(Sequential(layers), input_shape=(256,), batch_size=16, device=CPU)  # no page-in cost measured
    assert not [d for d in quiet.diagnostics if d.code == "cpu-page-churn"]


# Attention between projections, measured: 64 x 64 scores per head, 4 x 8 heads of width 16, with and
# without dropout; forward and backward seconds
ATTENTION = {"float32": {"dropout": [(32, 64, 64, 16, 1.2e-3, 0.6e-3), (32, 256, 256, 16, 32e-3, 16e-3)],
                         "plain": [(32, 64, 64, 16, 0.2e-3, 0.4e-3)]}}


def test_attention_core_priced_from_measured_attention_layers():
    p = _profile(attention=ATTENTION)
    assert p.attention_seconds(32, 64, 64, 16, True, "float32") == (1.2e-3, 0.6e-3)
    assert p.attention_seconds(32, 64, 64, 16, False, "float32") == (0.2e-3, 0.4e-3)
    assert p.attention_seconds(32, 64, 64, 16, True, "bfloat16") == (1.2e-3, 0.6e-3)  # float32's, if alone
    # per score, geometric between the measured rows (equally far in log scores, same head width)
    fwd, bwd = p.attention_seconds(32, 128, 128, 16, True, "float32")
    per_score = (1.2e-3 / (32 * 64 * 64) * 32e-3 / (32 * 256 * 256)) ** 0.5
    assert fwd == pytest.approx(32 * 128 * 128 * per_score)
    assert bwd == pytest.approx(fwd / 2)
    assert _profile().attention_seconds(32, 64, 64, 16, True, "float32") is None


def test_torch_attention_layers_take_the_measured_core():
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.1, batch_first=True)
    est = estimate(layer, input_shape=(64, 64), batch_size=8)
    plain = training_cost(est, device=_profile(framework="torch"))
    measured = training_cost(est, device=_profile(framework="torch", attention=ATTENTION))
    core = sum(ATTENTION["float32"]["dropout"][0][4:])
    # the measured core replaces the scores' products, their softmax and the probabilities' dropout
    products = sum(CPU.matmul_seconds(m, k, n, "float32") for m, k, n in ((32 * 64, 16, 64), (32 * 64, 64, 16)))
    softmax_and_dropout = CPU.memory_seconds(32 * 64 * 64 * 4 * 2 * 2) * 2.5
    assert measured.device_seconds - plain.device_seconds == pytest.approx(
        core - 3 * products - softmax_and_dropout)
    # Keras builds attention from its own operations: a Keras profile keeps the decomposition
    keras = training_cost(est, device=_profile(framework="keras-torch", attention=ATTENTION))
    assert keras.device_seconds == pytest.approx(training_cost(est, device=_profile(framework="keras-torch")).device_seconds)


def test_a_recurrent_kernels_kept_blocks_are_paged_in_again_when_they_set_the_threshold():
    torch = pytest.importorskip("torch")
    with torch.device("meta"):
        model = torch.nn.LSTM(8, 64, num_layers=2, batch_first=True)
    est = estimate(model, input_shape=(32, 8), batch_size=32)
    kept = 77 * 32 * 32 * 64  # bytes per batch x step x unit, per layer: the step's largest block
    p = _profile(page_fault_s_per_byte=1e-10, recurrent_saved={"lstm": 77.0}, recurrent_workspace={"lstm": 17.0})
    cost = training_cost(est, optimizer="sgd", device=p)
    # freed in the backward and made again by the next forward, one per layer; the smaller workspace is not
    assert cost.largest_paged_block == kept
    assert cost.paged_in_seconds == pytest.approx(2 * kept * 1e-10)


def test_a_compiled_keras_step_dispatches_no_update_operation_from_python():
    # a compiled step's update runs inside its graph: what the executor spends per variable is in the
    # calibrated per-layer cost; torch's loop dispatches Adam's operations for each tensor
    p = _profile(op_overhead_s=1e-4, step_overhead_s=5e-4, layer_overhead_s=7e-5, optimizer_seconds={"adam": 1e-9})
    layers = [Dense(16, activation="relu"), Dense(1)]
    keras_cost = _cost(layers, (8,), 4, replace(p, framework="keras"))
    torch_cost = _cost(layers, (8,), 4, replace(p, framework="torch"))
    update_dispatch = 12 * 4 * 1e-4  # Adam's operations for each of four tensors
    # the calibrated step cost held the calibration model's update: torch's takes it out (down to
    # nothing here), then adds its own dispatches; the compiled step keeps the calibrated cost whole
    assert torch_cost.host_seconds - keras_cost.host_seconds == pytest.approx(update_dispatch - 5e-4)
    assert keras_cost.host_seconds > 5e-4


def test_keras_on_torch_adds_the_bias_and_the_activation_as_operations_of_their_own():
    p = _profile(page_fault_s_per_byte=1e-10, framework="torch")
    units = MMAP_CEILING // 4 // 64 + 1  # outputs just over the ceiling: each a fresh mapped block
    layers = [Dense(units, activation="relu", name="wide"), Dense(1, name="head")]
    torch_cost = _cost(layers, (1,), 64, p, optimizer="sgd")
    keras_cost = _cost(layers, (1,), 64, replace(p, framework="keras-torch"), optimizer="sgd")
    block = 64 * units * 4
    # the product's own output and the biased one before the activation, and the activation's gradient
    assert keras_cost.paged_in_seconds - torch_cost.paged_in_seconds == pytest.approx(3 * block * 1e-10)
    wide = dict(keras_cost.layer_seconds)["wide"] - dict(torch_cost.layer_seconds)["wide"]
    assert wide == pytest.approx(CPU.memory_seconds(2 * block))  # the bias added in a pass of its own


def test_products_reading_an_operand_transposed_take_that_layouts_rates():
    # measured products of a 64-row batch: forward-shaped and input-gradient-shaped, plain and with a
    # transposed second operand; weight-gradient-shaped with a transposed first operand
    fwd, dgrad, wgrad = (64, 128, 256), (64, 256, 128), (128, 64, 256)
    p = _profile(matmul={"float32": [(*fwd, 1e-3), (*dgrad, 4e-3)]},
                 matmul_layouts={"transpose_b": {"float32": [(*fwd, 2e-3), (*dgrad, 8e-3)]},
                                 "transpose_a": {"float32": [(*wgrad, 3e-3)]}})
    assert p.matmul_seconds(*dgrad, "float32", "transpose_b") == pytest.approx(8e-3)
    assert p.matmul_seconds(*dgrad, "float32", "transpose_a") == pytest.approx(3e-3)  # one shape measured
    assert p.matmul_seconds(*fwd, "bfloat16", "transpose_b") == p.matmul_seconds(*fwd, "bfloat16")  # not measured
    layers = [Dense(128, use_bias=False, name="first"), Dense(256, use_bias=False, name="second")]
    est = estimate(Sequential(layers), input_shape=(128,), batch_size=64)

    def second(framework):
        return dict(training_cost(est, device=replace(p, framework=framework)).layer_seconds)["second"]
    # Keras' kernel is (in, out): x @ W, dy @ W^T, x^T @ dy; torch's (out, in): x @ W^T, dy @ W, dy^T @ x
    assert second("keras") == pytest.approx(1e-3 + 8e-3 + 3e-3)
    assert second("torch") == pytest.approx(2e-3 + 4e-3 + 3e-3)


def test_the_first_layers_update_runs_alone_in_a_compiled_step():
    # Adam measured at 1 ns per parameter over tensors updated side by side, 3 ns for one tensor alone:
    # the first layer's gradients come last in the backward, so nothing runs beside its update
    p = _profile(framework="keras", optimizer_seconds={"adam": 1e-9}, optimizer_alone_seconds={"adam": 3e-9})
    cost = _cost([Dense(300, name="first"), Dense(1)], (2000,), 8, p)
    first, total = 2000 * 300 + 300, 2000 * 300 + 300 + 301
    assert dict(cost.layer_seconds)["adam update"] == pytest.approx(total * 1e-9 + first * 2e-9)
    side_by_side = _cost([Dense(300), Dense(1)], (2000,), 8, replace(p, optimizer_alone_seconds={}))
    assert dict(side_by_side.layer_seconds)["adam update"] == pytest.approx(total * 1e-9)


def test_autocast_casts_each_weight_and_its_gradient_as_operations_of_their_own():
    # a Linear with a bias: two casts in the forward, two gradients cast back in the backward, each an
    # operation at the calibrated share of a Linear+ReLU pair; each cast moves 6 bytes per element
    pair = 7e-5
    p = _profile(step_overhead_s=1e-4, layer_overhead_s=pair, overheads_exclude_update=True)
    layers = [Dense(64, activation="relu"), Dense(32, activation="relu"), Dense(1)]
    est = estimate(Sequential(layers), input_shape=(16,), batch_size=8)
    full, mixed = (training_cost(est, optimizer="sgd", precision=precision, device=p)
                   for precision in ("float32", "mixed_bfloat16"))
    assert mixed.host_seconds - full.host_seconds == pytest.approx(3 * 4 * pair / PAIR_OPS)
    frozen = estimate(Sequential([Dense(64, trainable=False)] + layers[1:]), input_shape=(16,), batch_size=8)
    frozen_mixed = training_cost(frozen, optimizer="sgd", precision="mixed_bfloat16", device=p)
    frozen_full = training_cost(frozen, optimizer="sgd", precision="float32", device=p)
    # the frozen layer's weights are cast in the forward, their gradients never
    assert frozen_mixed.host_seconds - frozen_full.host_seconds == pytest.approx(10 * pair / PAIR_OPS)


def test_autocast_casts_add_to_a_layer_kinds_calibrated_host_cost():
    # the kind's host cost was measured without autocast: the casts of its weight and bias come on top
    pair = 7e-5
    p = _profile(step_overhead_s=1e-4, layer_overhead_s=pair, overheads_exclude_update=True,
                 kind_overheads={"conv": 3e-4})
    est = estimate(Sequential([Conv(8, 3), Flatten(), Dense(1)]), input_shape=(8, 8, 3), batch_size=4)
    full, mixed = (training_cost(est, optimizer="sgd", precision=precision, device=p)
                   for precision in ("float32", "mixed_bfloat16"))
    assert mixed.host_seconds - full.host_seconds == pytest.approx(2 * 4 * pair / PAIR_OPS)


def test_keras_norms_keep_a_float32_copy_of_their_input_under_mixed_precision():
    # Keras' BatchNormalization, LayerNormalization, GroupNormalization and RMSNormalization compute in
    # float32 whatever the policy (keras/src/layers/normalization): under mixed precision their backward
    # reads the copy of their input cast up; torch's autocast runs BatchNorm on the 16-bit input itself
    def _saved(call, activation_bytes, profile, framework, mixed=False):
        return call.layer.saved(call, SavingRules(framework, activation_bytes, mixed, cpu=profile.device_type == "cpu"))

    est = estimate(Sequential([Conv(8, 3, padding="same"), BatchNorm(), Activation("relu")]),
                   input_shape=(8, 8, 3), batch_size=4)
    bn, n = est.layers[1], 4 * 8 * 8 * 8
    stats = ((bn.name, "statistics"), 2 * 8 * 4)  # a float32 mean and inverse deviation per channel
    assert _saved(bn, 2, CPU, "keras", mixed=True) == [((bn.name, "float32_input"), 4 * n), stats]
    assert _saved(bn, 2, CPU, "keras-torch", mixed=True) == [((bn.name, "float32_input"), 4 * n), stats,
                                                               ((bn.name, "centred"), 4 * n)]
    assert _saved(bn, 2, CPU, "torch", mixed=True) == [(bn.inbound[0], 2 * n), stats]
    assert _saved(bn, 4, CPU, "keras") == [(bn.inbound[0], 4 * n), stats]

    def activations(precision):
        return training_cost(est, precision=precision, device=replace(CPU, framework="keras")).memory.activations
    # mixed precision halves what the others keep (and adds the cast copy of the model's input, 2 bytes
    # per element, which the convolution reads); the norm's copy stays 4 bytes per element
    assert activations("mixed_bfloat16") == (activations("float32") - 4 * n - 64) // 2 + 4 * n + 64 + 2 * 4 * 8 * 8 * 3


def test_norm_statistics_per_channel_sample_and_row():
    from paramcalc import GroupNorm, LayerNorm
    from paramcalc.layers.norm import STATISTICS_BYTES

    def _norm_statistics(call):
        return call.layer.statistics(call) * STATISTICS_BYTES

    est = estimate(Sequential([Conv(8, 3), BatchNorm(), GroupNorm(groups=2), GroupNorm(groups=-1),
                               Flatten(), LayerNorm()]), input_shape=(6, 6, 3), batch_size=4)
    bn, gn, per_channel, _, ln = est.layers[1:]
    # float32 mean and inverse deviation: per channel, per sample and group (Keras' -1: a group per
    # channel), per normalised row
    assert [_norm_statistics(r) for r in (bn, gn, per_channel, ln)] == [2 * 8 * 4, 2 * 4 * 2 * 4,
                                                                         2 * 4 * 8 * 4, 2 * 4 * 4]
