"""Training cost: FLOPs by phase, memory by part and the simulated peak, capacity, step time."""

from __future__ import annotations

import pytest

import paramcalc
from paramcalc import Dense, Flatten, Sequential, estimate, training_cost
from paramcalc.core.units import format_bytes
from paramcalc.cost.devices import BUILTIN, resolve


def _dense_stack(*layers, shape=(100,), batch=32, **kwargs):
    return estimate(Sequential(list(layers)), input_shape=shape, batch_size=batch, **kwargs)


@pytest.mark.parametrize("optimizer,per_param", [("adam", 8), ("adamw", 8), ("sgd", 0), ("momentum", 4),
                                                  ("rmsprop", 4), ("adagrad", 4)])
def test_optimizer_state(optimizer, per_param):
    est = _dense_stack(Dense(10), optimizer=optimizer)
    m = est.training.memory
    assert m.weights == 1010 * 4 and m.gradients == 1010 * 4 and m.optimizer == 1010 * per_param


def test_first_layer_needs_no_input_gradient():
    est = _dense_stack(Dense(10), Dense(5), optimizer="sgd")
    cost = est.training
    first, second = 32 * 100 * 10, 32 * 10 * 5  # MACs
    assert cost.dgrad_flops == 2 * second  # only the second layer passes gradients back
    assert cost.wgrad_flops == 2 * first + 32 * 10 + 2 * second + 32 * 5  # products and bias sums
    assert cost.forward_flops == est.flops_per_batch


def test_per_layer_flops_add_up():
    cost = _dense_stack(Dense(10), Dense(5), optimizer="sgd").training
    (a, f1, d1, w1), (b, f2, d2, w2) = cost.layer_flops
    assert (a, b) == ("dense", "dense_1") and d1 == 0 and d2 == 2 * 32 * 10 * 5
    assert (f1 + f2, d1 + d2, w1 + w2) == (cost.forward_flops, cost.dgrad_flops, cost.wgrad_flops)


def test_frozen_layers_need_no_weight_gradient():
    est = _dense_stack(Dense(10, trainable=False), Dense(5), optimizer="adam")
    assert est.training.wgrad_flops == 2 * 32 * 10 * 5 + 32 * 5
    assert est.training.dgrad_flops == 0  # nothing upstream of the second layer requires grad
    assert est.training.memory.gradients == 55 * 4 and est.training.memory.optimizer == 55 * 8


def test_seed_case_memory_parts():
    est = estimate(paramcalc.seed_model("reshaped_flatten", 20020), batch_size=128, optimizer="adam")
    m = est.training.memory
    params = 1_801_831_101
    assert (m.weights, m.gradients, m.optimizer) == (4 * params, 4 * params, 8 * params)
    relu_out = 128 * 20020 * 300 * 4  # the fused ReLU's output, kept once though Flatten views it
    assert relu_out <= m.activations < relu_out + 10**6
    assert m.input_batch == 128 * 20020 * 4
    # Adam alone needs 16 bytes per parameter: the seed model cannot train on a 24 GB machine
    assert m.peak > 16 * params and paramcalc.largest_fitting(est, "24 GiB") == 0


def test_symbolic_batch_gives_formulas():
    est = estimate(paramcalc.seed_model("flat", 20020), optimizer="adam")
    m = est.training.memory
    assert m.optimizer == 8 * 6_126_801
    assert str(m.input_batch) == "80080*B"
    assert isinstance(m.peak, paramcalc.Sym) and m.peak.subs(B=0) > 16 * 6_126_801 - 1
    assert m.peak.subs(B=128) >= est.subs(B=128).training.memory.peak  # an upper bound


def test_training_waits_for_concrete_sizes():
    est = estimate(paramcalc.seed_model("flat"), optimizer="adam")
    assert est.training is None and "subs(n=...)" in est.notes[-1]
    assert est.subs(n=20020).training.memory.weights == 4 * 6_126_801


def test_largest_batch_is_the_boundary():
    est = estimate(paramcalc.seed_model("flat", 20020))
    budget = 2 * 2**30
    largest = paramcalc.largest_fitting(est, budget)
    assert training_cost(est.subs(B=largest)).memory.peak <= budget
    assert training_cost(est.subs(B=largest + 1)).memory.peak > budget


def test_largest_batch_on_a_device_by_its_rules_and_memory():
    est = estimate(paramcalc.seed_model("flat", 20020))
    keras_torch = paramcalc.largest_fitting(est, "2 GiB", keras_backend="torch")
    on_tensorflow = paramcalc.largest_fitting(est, "2 GiB")
    assert keras_torch < on_tensorflow  # Keras' own update on torch holds three lists of every tensor
    assert training_cost(est.subs(B=keras_torch), keras_backend="torch").memory.peak <= 2 * 2**30
    # the device's memory is the budget unless one is given; its framework's rules decide the peak
    h100 = paramcalc.largest_fitting(est, device="h100-sxm-torch")
    peak = training_cost(est.subs(B=h100), device="h100-sxm-torch").memory.peak
    assert peak <= paramcalc.cost.devices.resolve("h100-sxm-torch").memory_bytes
    assert training_cost(est.subs(B=h100 + 1), device="h100-sxm-torch").memory.peak > \
        paramcalc.cost.devices.resolve("h100-sxm-torch").memory_bytes
    with pytest.raises(paramcalc.ParamcalcError, match="memory budget or a device"):
        paramcalc.largest_fitting(est)


def test_largest_input_length():
    est = estimate(Sequential([Dense(64), Flatten(), Dense(1)]), input_shape=("n", 1), batch_size=32)
    n = paramcalc.largest_fitting(est, "1 GiB", symbol="n")
    assert training_cost(est.subs(n=n)).memory.peak <= 2**30 < training_cost(est.subs(n=n + 1)).memory.peak


def test_parse_bytes():
    assert paramcalc.parse_bytes("8 GiB") == 8 * 2**30 and paramcalc.parse_bytes("80GB") == 80 * 10**9
    assert paramcalc.parse_bytes("1.5 KiB") == 1536 and paramcalc.parse_bytes(12) == 12
    with pytest.raises(paramcalc.ParamcalcError, match="memory size"):
        paramcalc.parse_bytes("lots")


def test_step_time_on_every_builtin_device():
    for name in list(BUILTIN) + ["h100-sxm-torch", "h100"]:
        est = estimate(paramcalc.seed_model("reshaped_flatten", 2000), batch_size=128, device=name)
        cost = est.training
        assert cost.step_seconds > 0 and cost.samples_per_second > 0
        assert cost.epoch_seconds(33230) == pytest.approx(260 * cost.step_seconds)


def test_reshaped_flatten_is_far_slower_than_flat():
    flat = estimate(paramcalc.seed_model("flat", 20020), batch_size=128, device="h100-sxm-torch").training
    big = estimate(paramcalc.seed_model("reshaped_flatten", 20020), batch_size=128, device="h100-sxm-torch").training
    assert big.step_seconds > 30 * flat.step_seconds
    assert big.layer_seconds[0][0] in ("adam update", "dense_1")


def test_unknown_options_are_clear_errors():
    est = estimate(Sequential([Dense(3)]), input_shape=(3,), batch_size=2)
    with pytest.raises(paramcalc.ParamcalcError, match="unknown optimizer 'lion'"):
        training_cost(est, optimizer="lion")
    with pytest.raises(paramcalc.ParamcalcError, match="unknown precision"):
        training_cost(est, precision="int4")
    with pytest.raises(paramcalc.ParamcalcError, match="unknown device"):
        resolve("tpu-v9")


def test_training_in_json_and_summary():
    est = estimate(paramcalc.seed_model("flat", 100), batch_size=8, optimizer="adam", device="cpu")
    data = est.to_dict()["training"]
    assert data["memory_bytes"]["optimizer"] == 8 * est.trainable_params
    # a Keras model on a datasheet profile trains as Keras compiles it, and both views say so
    assert data["framework"] == "keras"
    assert "Training step (adam, float32, batch 8; Keras, compiled step (TensorFlow, JAX))" in est.summary()


def test_a_calibrated_profile_without_the_precisions_products_says_so():
    model = Sequential([Dense(100), Dense(10)])

    def notes(device, dtype):  # the notes about the precision (the machine's have a test of their own)
        est = estimate(model, input_shape=(100,), batch_size=8, optimizer="adam", dtype=dtype, device=device)
        return tuple(n for n in est.notes if "matrix products" in n)
    assert notes("cpu-dev-torch", "float32") == ()
    assert notes("h100-sxm", "mixed_bfloat16") == ()  # a datasheet profile: curves are all it has
    assert notes("h100-sxm-torch", "mixed_bfloat16") == ()  # measured bfloat16 products
    (note,) = notes("cpu-dev-torch", "mixed_bfloat16")
    assert "measured float32 matrix products, not bfloat16" in note and "--dtypes float32,bfloat16" in note


def test_substituting_sizes_settles_the_training_notes():
    est = estimate(Sequential([Dense(300), Flatten(), Dense(1)]), input_shape=("n", 1), batch_size=8,
                   optimizer="adam", device="cpu")
    assert est.training is None and est.notes == ("training cost needs concrete sizes: call subs(n=...) to see it",)
    settled = est.subs(n=100)
    assert settled.training.step_seconds > 0 and settled.notes == ()
    waiting = estimate(Sequential([Dense(4)]), input_shape=(3,), optimizer="adam", device="cpu")
    assert any("concrete batch size" in n for n in waiting.notes) and waiting.subs(B=2).notes == ()


def test_a_cpu_profile_of_another_machine_or_a_busy_one_says_so():
    from paramcalc.core.machine import this_machine

    here = this_machine()
    model = Sequential([Dense(100), Dense(10)])

    def notes(**extra):
        data = {"name": "my-cpu", "framework": "torch", "device": "cpu",
                "matmul": {"float32": [{"m": 64, "k": 64, "n": 64, "seconds": 1e-5}]}, **extra}
        return estimate(model, input_shape=(100,), batch_size=8, optimizer="adam", device=data).notes

    assert notes(machine=here.to_dict()) == ()  # calibrated here, quietly
    (other,) = notes(machine={"cpu": "Some Other CPU", "vector": "AVX2", "threads": 64})
    assert "describes Some Other CPU, 64 threads, AVX2, not this machine" in other
    assert "paramcalc calibrate --out my-cpu.json" in other
    (unknown,) = notes()
    assert "does not record the machine it measured" in unknown
    busy = {"others_share": 0.41, "steal_share": 0.0, "worst_share": 0.9, "worst_step": "x", "seconds": 60, "cpus": 2}
    (noisy,) = notes(machine=here.to_dict(), contention=busy)
    assert "other processes took 41% of the machine" in noisy
    # a GPU's profile describes the GPU, wherever the estimate runs
    assert not any("machine" in n for n in estimate(model, input_shape=(100,), batch_size=8,
                                                   device="h100-sxm-torch").notes)
    label = estimate(model, input_shape=(100,), batch_size=8, device="cpu-dev-torch").summary()
    assert "On cpu-dev-torch (an earlier x86-64 development CPU, model not recorded, 2 threads, AVX-512)" in label


def test_the_peak_says_when_it_happens_and_its_parts_add_up():
    import torch

    from paramcalc import seed_model

    nn = torch.nn
    with torch.device("meta"):
        cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
        lstm = nn.LSTM(16, 32, batch_first=True)
    cases = [(seed_model(v, 500), None, {}) for v in ("flat", "reshaped_flatten", "reshaped")]
    cases += [(cnn, (3, 32, 32), {}), (lstm, (12, 16), {}), (seed_model("flat", 500), None, {"dtype": "mixed_bfloat16"}),
              (seed_model("reshaped_flatten", 500), None, {"keras_backend": "torch"})]
    phases = set()
    for model, shape, options in cases:
        for optimizer in ("adam", "sgd"):
            est = estimate(model, input_shape=shape, batch_size=16, optimizer=optimizer, **options)
            m = est.training.memory
            moment = m.peak_moment
            assert m.weights + m.optimizer + m.input_batch + sum(n for _, n in moment.parts) == m.peak
            assert moment.phase in ("forward", "backward", "update")
            assert moment.layer is None if moment.phase == "update" else moment.layer in {r.name for r in est.layers}
            phases.add(moment.phase)
            assert f"= {format_bytes(m.peak)}" in est.summary()  # the peak line reads as a sum
            assert est.to_dict()["training"]["peak_moment"]["phase"] == moment.phase
    assert phases == {"backward", "update"}
    # a symbolic batch has a formula for a peak, and no single moment
    assert estimate(seed_model("flat", 500), optimizer="adam").training.memory.peak_moment is None


def _torch_models_of_every_family():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Scores(nn.Module):  # a product of two activations, batched: timm's GhostNet, FasterNet, SHViT
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(6, 6)

        def forward(self, x):
            h = self.proj(x)
            return torch.matmul(h, h.transpose(-1, -2)).softmax(-1) @ h

    return {
        "products": (Scores(), (4, 6)),
        "pools": (nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.MaxPool2d(2), nn.AvgPool2d(3), nn.Flatten(),
                                nn.Linear(8 * 25, 10)), (3, 32, 32)),
        "norms": (nn.Sequential(nn.Linear(8, 8), nn.Unflatten(1, (2, 4)), nn.LayerNorm(4), nn.GroupNorm(2, 2),
                                nn.Flatten(), nn.Dropout(0.1), nn.Linear(8, 3)), (8,)),
        "encoder": (nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2), (5, 16)),
        "recurrent": (nn.LSTM(6, 8, num_layers=2, batch_first=True), (7, 6)),
        "embedding": (nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(40, 2)), (5,)),
    }


@pytest.mark.parametrize("family", ["pools", "norms", "encoder", "recurrent", "embedding", "products"])
def test_training_cost_without_a_batch_size_is_a_formula_equal_to_the_estimate_at_each_batch(family):
    """An estimate with an optimizer and no batch_size keeps its training memory in the batch symbol;
    each batch substituted gives what an estimate at that batch gives. Pooling's work, a norm's statistics
    and a product of activations once asked a formula for its truth value or its maximum, and every such
    model failed with a TypeError."""
    model, shape = _torch_models_of_every_family()[family]
    symbolic = estimate(model, input_shape=shape, optimizer="adam")
    for batch in (1, 3):
        assert symbolic.subs(B=batch).training.memory == estimate(model, input_shape=shape, batch_size=batch,
                                                                  optimizer="adam").training.memory


def test_a_pooled_model_with_an_optimizer_and_no_batch_keeps_its_training_cost_in_the_batch():
    """Pooling's work once divided a formula in the batch by another: an estimate without batch_size
    failed with a TypeError. Its training memory is a formula, equal to the estimate at a batch size."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.MaxPool2d(2), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(8 * 25, 10))
    symbolic = estimate(model, input_shape=(3, 32, 32), optimizer="adam")
    at_four = estimate(model, input_shape=(3, 32, 32), batch_size=4, optimizer="adam", device="cpu-dev-torch")
    assert symbolic.subs(B=4).training.memory == at_four.training.memory
    assert at_four.training.step_seconds > 0


def test_a_peak_at_the_loss_is_shown_in_the_summary():
    """A language model's logits over a large vocabulary: the cross-entropy loss's softmax and gradients
    set the peak between the passes, and the summary says so (it failed with a KeyError)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = nn.Sequential(nn.Embedding(100, 8), nn.Linear(8, 50_000))
    est = estimate(model, input_shape={"input": (16,)}, batch_size=4, optimizer="sgd", loss="cross_entropy")
    assert est.training.memory.peak_moment.phase == "loss"
    assert "Peak at the loss, between the passes: " in est.summary()
