"""torch's LSTM on a CPU keeps oneDNN's workspace and its own tensors: paramcalc's rule against what
autograd saves, to the byte (``layers/recurrent.py``, ``onednn_lstm_workspace``)."""

from __future__ import annotations

import pytest

from paramcalc import estimate
from paramcalc.layers.recurrent import onednn_lstm_workspace

from .autograd_kept import kept_by_autograd

torch = pytest.importorskip("torch")
nn = torch.nn

# (input size, hidden size, layers, bidirectional, batch first, dropout, steps, batch)
CASES = [
    (33, 65, 1, False, True, 0.0, 7, 9),  # rows padded to 80 floats, the gates to 272
    (7, 5, 2, True, False, 0.0, 10, 3),  # time first: the input is kept as it is; layer 2 reads both directions
    (6, 5, 3, False, True, 0.5, 4, 3),  # dropout between layers: its noise and the input it makes
    (192, 48, 1, True, True, 0.0, 32, 64),  # sequencer2d_s's first stage: 13.3 MB per direction
    (100, 200, 2, False, False, 0.0, 20, 5),  # a wider state than input
]


@pytest.mark.parametrize("features, hidden, layers, bidirectional, batch_first, dropout, steps, batch", CASES)
def test_a_torch_lstm_on_a_cpu_keeps_what_autograd_saves(features, hidden, layers, bidirectional, batch_first,
                                                        dropout, steps, batch):
    torch.manual_seed(0)
    lstm = nn.LSTM(features, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                   dropout=dropout).train()
    x = torch.randn((batch, steps, features) if batch_first else (steps, batch, features))
    kept = kept_by_autograd(lstm, lambda: lstm(x), [x])
    # one sample's shape with the batch axis left out; a time-first module has its length in that place
    sample, leading = ((steps, features), batch) if batch_first else ((batch, features), steps)
    est = estimate(lstm.to("meta"), input_shape=sample, batch_size=leading, optimizer="sgd", device="cpu")
    memory = est.training.memory
    assert memory.activations + memory.input_batch == kept


def test_onednns_workspace_starts_each_part_on_a_page_and_pads_rows_to_cache_lines():
    # 10 steps, 3 sequences, 7 features, 5 units: every part fits one or two pages
    assert onednn_lstm_workspace(10, 3, 7, 5) == 10 * 4096
    # 32 x 64 x 48 units over 192 features: gates 384 pages, hidden states 96, three blocks of 792, two of 198
    assert onednn_lstm_workspace(32, 64, 192, 48) == (384 + 96 + 3 * 792 + 2 * 198) * 4096
    # a batch left as a symbol gives a formula that a number then makes exact
    from paramcalc import symbol

    formula = onednn_lstm_workspace(32, symbol("B"), 192, 48)
    assert formula.subs({"B": 64}) == onednn_lstm_workspace(32, 64, 192, 48)
