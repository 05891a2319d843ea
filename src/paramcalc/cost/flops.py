"""FLOPs of a training step by phase: forward, input gradients (dgrad) and weight gradients (wgrad).

For a product with a weight, dgrad and wgrad each cost as much as the forward product; a product of two
activations (attention scores) needs two products backward, both counted in dgrad; elementwise work
costs its forward count again; a bias gradient reads the output gradient once. The first layer needs no
dgrad, but the gradients a recurrence passes from step to step (its state products) are made wherever
the backward runs through it.
"""

from __future__ import annotations

from paramcalc.core.dims import Dim
from paramcalc.cost.step import Step


def phase_flops(step: Step, call) -> tuple[Dim, Dim, Dim]:
    """(forward, dgrad, wgrad) FLOPs of one call for the whole batch."""
    work = step.work(call)
    forward = call.flops_per_batch
    activation_macs = work.activation_macs
    weight_macs = call.macs_per_batch - activation_macs
    state_macs = sum(m * k * n for m, k, n in work.state_products)
    dgrad_needed, trains = step.reads_grad(call), step.trains(call)
    # backward through the call's own activation products and elementwise work, needed for either
    # gradient (attention's projections get their weight gradients through the scores); the bias's
    # gradient is weight-gradient work
    internal = 4 * activation_macs + (forward - 2 * call.macs_per_batch - work.bias_elements)
    dgrad = (2 * weight_macs if dgrad_needed else 0) + (internal + (0 if dgrad_needed else 2 * state_macs)
                                                         if dgrad_needed or trains else 0)
    wgrad = 2 * weight_macs + work.bias_elements if trains else 0
    return forward, dgrad, wgrad
