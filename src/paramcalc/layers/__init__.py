"""The built-in layer kinds, one family a module; importing this package registers them all.

Every module here is imported, so a new kind is one file: its class, registered with
``@register_layer``, is exported from ``paramcalc`` by its class name.
"""

import importlib
import pkgutil

from paramcalc.core.layer import Context, Inferred, Layer, Weight
from paramcalc.layers.elementwise import ACTIVATION_FLOPS

_SUPPORT = {"spatial"}  # helpers, not kinds

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _SUPPORT:
        importlib.import_module(f"{__name__}.{_module}")


def _kinds() -> dict:
    from paramcalc.core.registry import layer_classes

    return {cls.__name__: cls for cls in layer_classes() if cls.__module__.startswith(__name__ + ".")}


globals().update(_kinds())
__all__ = ["ACTIVATION_FLOPS", "Context", "Inferred", "Layer", "Weight", *sorted(_kinds())]
