"""The time a step's collectives take, and how much of it the compute hides.

Each collective is priced as a ring on the slowest link it crosses: within a node the device's links
(``DeviceProfile.link_bandwidth``: NVLink, PCIe), across nodes its share of the network
(``network_bandwidth``); the bytes a ring sends from each rank (``Collective.sent``) over that bandwidth,
plus one start-up latency per ring step (2 (N-1) steps for an all-reduce, N-1 for the others) per call.

Overlap, as torch runs them: DDP's all-reduce of a bucket and FSDP2's reduce-scatter of a unit start
as soon as their gradients exist and run beside the rest of the backward; FSDP2's all-gathers are
issued ahead (prefetch) and run beside the forward and backward; every collective waits for the one
before it on the same stream. What cannot hide: the last call of each overlapped kind (nothing is left
to run beside it), whatever exceeds the compute it runs beside, tensor parallelism's all-reduces (their
result is needed at once) and ZeroRedundancyOptimizer's broadcasts (after the update).
Datasheet interconnect figures, not calibrated: estimates that use them say so.
"""

from __future__ import annotations

from dataclasses import dataclass

# collective -> ring steps per rank, as a multiple of (N - 1)
RING_STEPS = {"all_reduce": 2, "all_gather": 1, "reduce_scatter": 1, "broadcast": 1}


@dataclass(frozen=True)
class CommunicationTime:
    """Seconds of one step's communication on one rank: all of it, and what the compute does not hide."""

    seconds: float
    exposed: float
    link: str  # "within a node" or "between nodes"


def collective_seconds(collective, ranks: int, bandwidth: float, latency: float) -> float:
    steps = RING_STEPS.get(collective.name, 1) * max(ranks - 1, 0)
    return collective.sent / bandwidth + steps * latency * collective.calls


def communication_time(collectives, parallel, profile, forward_s: float, backward_s: float):
    """Seconds of ``collectives`` on ``profile``'s interconnect and what the compute does not hide; None
    where the profile does not know its interconnect."""
    if not collectives or profile.link_bandwidth is None:
        return None
    ranks = parallel.data * parallel.tensor
    nodes = parallel.nodes or -(-ranks // max(profile.devices_per_node, 1))
    data_crosses = nodes > 1  # a tensor-parallel group sits in a node where it fits: data groups span them
    tensor_crosses = parallel.tensor > -(-ranks // nodes)
    total = exposed = 0.0
    for c in collectives:
        is_tensor = c.purpose.startswith("tensor parallel")
        crosses = tensor_crosses if is_tensor else data_crosses
        if crosses and profile.network_bandwidth is None:
            return None
        bandwidth = profile.network_bandwidth if crosses else profile.link_bandwidth
        latency = profile.network_latency_s if crosses else profile.link_latency_s
        seconds = collective_seconds(c, parallel.tensor if is_tensor else parallel.data, bandwidth, latency)
        total += seconds
        window = _window(c, forward_s, backward_s)
        if is_tensor or window is None:
            exposed += seconds
        else:
            last = seconds / max(c.calls, 1)  # the last call has nothing left to run beside
            exposed += max(seconds - window, last)
    link = "between nodes" if data_crosses else "within a node"
    return CommunicationTime(total, exposed, link)


def _window(collective, forward_s: float, backward_s: float) -> float | None:
    """The compute a collective runs beside: the backward for gradients, both passes for parameters
    gathered ahead; None for collectives nothing runs beside."""
    if collective.purpose.startswith("gradients"):
        return backward_s
    if collective.purpose.startswith("parameters"):
        return forward_s + backward_s
    return None
