"""The cost model: what training an estimated model costs, read from each call's work description.

``training_cost`` (FLOPs by phase, memory by part and peak, step time on a device), device profiles
(``devices``) and what fits (``capacity``). No module here asks which kind a layer is: kinds describe
their own work (``paramcalc.layers.work``).
"""

from .devices import DeviceProfile
from .memory import MemoryBreakdown, PeakMoment
from .training import TrainingCost, TrainingSetup, training_cost

__all__ = ["DeviceProfile", "MemoryBreakdown", "PeakMoment", "TrainingCost", "TrainingSetup", "training_cost"]
