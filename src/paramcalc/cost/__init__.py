"""The cost model: what training an estimated model costs, read from each call's work description.

``training_cost`` (FLOPs by phase, memory by part and peak, step time on a device), device profiles
(``devices``) and what fits (``capacity``). No module here asks which kind a layer is: kinds describe
their own work (``paramcalc.core.work``).
"""

from paramcalc.cost.devices import DeviceProfile
from paramcalc.cost.memory import MemoryBreakdown, PeakMoment
from paramcalc.cost.training import TrainingCost, TrainingSetup, training_cost

__all__ = ["DeviceProfile", "MemoryBreakdown", "PeakMoment", "TrainingCost", "TrainingSetup", "training_cost"]
