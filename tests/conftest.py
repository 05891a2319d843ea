import os

# Quiet TensorFlow's C++ logs before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

pytest_plugins = ["pytester"]

# Every answer a meta shape rule gives while a test reads a model is compared with torch's own meta
# kernel (frontends/torch_meta_memo.py): the coverage tests check the rules on every model they read.
# Likewise every replay of a captured forward's operations at the second batch size is compared with the
# forward run at that batch (frontends/torch_batch_replay.py).
from paramcalc.frontends import torch_batch_replay, torch_meta_memo  # noqa: E402

torch_meta_memo.CHECK = True
torch_batch_replay.CHECK = True


import pytest  # noqa: E402


@pytest.fixture
def replays(monkeypatch):
    """The outcome of each replay at the second batch size while the test runs: "replayed", or the name
    of the exception that made the forward run again."""
    outcomes: list = []
    replay = torch_batch_replay.replay

    def watched(*args, **kwargs):
        try:
            found = replay(*args, **kwargs)
        except Exception as err:
            outcomes.append(type(err).__name__)
            raise
        outcomes.append("replayed")
        return found

    monkeypatch.setattr(torch_batch_replay, "replay", watched)
    return outcomes
