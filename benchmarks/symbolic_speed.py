"""How long estimating takes on symbolic sizes through strided layers: the stacks that had doubled in
time per layer (nested floor terms), and a 5-level U-Net on ("h", "w", 3) from its Keras config and as a
torch module. Prints the median and spread of repeated estimates.

    python benchmarks/symbolic_speed.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import paramcalc  # noqa: E402
from paramcalc import Conv, Pool, Sequential  # noqa: E402


def cases():
    yield "16 MaxPool1D(2) on (n, 4)", Sequential([Pool(pool_size=2, rank=1) for _ in range(16)]), ("n", 4)
    yield "16 stride-2 Conv1D on (n, 4)", Sequential([Conv(4, 3, strides=2, rank=1) for _ in range(16)]), ("n", 4)
    yield ("13 x (Conv2D + MaxPool2D) on (h, w, 3)",
           Sequential([layer for _ in range(13) for layer in (Conv(8, 3, padding="same"), Pool(pool_size=2))]),
           ("h", "w", 3))
    yield "18 MaxPool1D(2) on (n, 4)", Sequential([Pool(pool_size=2, rank=1) for _ in range(18)]), ("n", 4)
    try:
        import keras
        from test_unet import _keras_unet

        yield "5-level U-Net, Keras config, (h, w, 3)", _keras_unet(keras, (None, None, 3)).get_config(), ("h", "w", 3)
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    for label, model, shape in cases():
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            est = paramcalc.estimate(model, input_shape=shape)
            times.append(time.perf_counter() - start)
        print(f"{label:<45} median {statistics.median(times) * 1e3:7.1f} ms (min {min(times) * 1e3:.1f}, "
              f"max {max(times) * 1e3:.1f}); output {est.format_shape(est.output_shape)}")


if __name__ == "__main__":
    main()
