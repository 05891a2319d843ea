"""What keeps a calibration honest and readable: the share of the machine other processes took while it
measured (a busy one is refused, with what to do), the spread between repeated runs, the machine a
profile records, and its progress as a bar with a total and an ETA."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from paramcalc.calibration.merge import spread
from paramcalc.calibration.report import Reporter
from paramcalc.core.contention import ContentionWatch, cpu_totals, too_busy
from paramcalc.core.errors import ParamcalcError
from paramcalc.core.machine import Machine, differs, this_machine
from paramcalc.interfaces import cli
from paramcalc.interfaces.progress import ProgressBar, format_duration

BUSY = "import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass\n"


@pytest.mark.skipif(cpu_totals() is None, reason="the kernel's counters (/proc/stat) are Linux's")
def test_the_watch_sees_other_processes_take_the_machine():
    watch = ContentionWatch()
    time.sleep(0.6)  # what the machine's other work takes anyway (a shared machine is seldom idle)
    watch.mark("resting")
    spin_until = time.time() + 0.6
    while time.time() < spin_until:  # this process's own work is not others': no more than resting
        pass
    watch.mark("alone")
    cpus = cpu_totals()[2]
    # processes that are not this one's children (started by a shell that does not wait for them)
    others = subprocess.Popen(["sh", "-c", " ".join(f"{sys.executable} -c '{BUSY.format(seconds=1.5)}' &"
                                                    for _ in range(cpus)) + " wait"])
    time.sleep(1.4)
    watch.mark("beside busy processes")
    summary = watch.summary()
    others.wait()
    resting, alone, busy = watch.spans
    # counted as others', the spin would add a whole CPU's share (0.5 of 2 CPUs)
    assert alone.others_share < resting.others_share + 0.3 and 0.5 < busy.others_share
    assert summary["worst_step"] == "beside busy processes" and summary["worst_share"] > 0.5
    assert too_busy(summary) and summary["cpus"] == cpus


def test_a_watch_reads_shares_from_the_kernels_counters():
    # 2 CPUs; over 10 s every process together ran 14 CPU-seconds, this one 4 of them: others took half
    readings = iter([(100.0, 0.0, 2), (114.0, 0.0, 2), (114.0, 0.0, 2)])
    clock = iter([0.0, 10.0, 10.0])
    own = iter([1.0, 5.0, 5.0])
    watch = ContentionWatch(read=lambda: next(readings), own=lambda: next(own), clock=lambda: next(clock))
    watch.mark("sweep")
    assert watch.spans[0].others_share == pytest.approx(0.5)
    assert watch.summary()["others_share"] == pytest.approx(0.5)


def _args(tmp_path):
    return SimpleNamespace(out=str(tmp_path / "cpu.json"), allow_busy=False)


def test_a_busy_calibration_is_refused_kept_and_explained(tmp_path):
    profile = {"name": "cpu", "matmul": {}, "contention": {"others_share": 0.38, "worst_share": 0.71,
                                                          "worst_step": "convolutions", "seconds": 90, "cpus": 2}}
    with pytest.raises(ParamcalcError) as refused:
        cli._refuse_if_busy(profile, _args(tmp_path), "this calibration")
    message = str(refused.value)
    assert "other processes took 38% of this machine's CPU time" in message and "'convolutions': 71%" in message
    assert "--repeat 3" in message and "--allow-busy" in message
    assert json.loads((tmp_path / "cpu.busy.json").read_text()) == profile  # nothing measured is lost
    assert not (tmp_path / "cpu.json").exists()
    cli._refuse_if_busy(profile, SimpleNamespace(out=str(tmp_path / "cpu.json"), allow_busy=True), "x")
    quiet = dict(profile, contention=dict(profile["contention"], others_share=0.03))
    cli._refuse_if_busy(quiet, _args(tmp_path), "this calibration")  # a quiet one passes


def test_repeated_runs_report_how_far_apart_they_are():
    runs = [{"matmul": {"float32": [{"m": 8, "seconds": s}]}, "op_overhead_s": o, "threads": 2}
            for s, o in ((1.0, 2e-6), (1.1, 2e-6), (2.0, 2e-6))]
    found = spread(runs)
    assert found["worst"] == pytest.approx(0.9 / 1.1, abs=1e-4) and found["where"] == "matmul.float32[0].seconds"
    assert found["count"] == 2  # the two timings; a thread count is no timing
    assert "82% at most (matmul.float32[0].seconds)" in cli._spread_text(found)


def test_this_machine_is_named_and_compared():
    here = this_machine()
    assert here.cpu and here.threads >= 1
    assert differs(Machine.from_dict(here.to_dict()), here) is None
    assert "not this machine" in differs(Machine("Other", "AVX2", 96), here)
    assert "does not record" in differs(None, here)
    if sys.platform.startswith("linux") and here.cpu != "unknown CPU":
        assert here.vector  # every x86-64 or arm64 Linux CPU lists some vector unit


def test_progress_piped_is_one_line_per_stage_and_message_with_elapsed_and_eta():
    now = {"t": 0.0}
    out = io.StringIO()
    bar = ProgressBar(out, tty=False, clock=lambda: now["t"])
    say = Reporter(bar)
    say.plan(["products", "kernels", "memory", "updates"])
    say.stage("products")
    say("matmul 64x64x64: 92.2 GFLOP/s")
    now["t"] = 30.0
    say.stage("kernels")
    now["t"] = 40.0
    say.stage("memory")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/4] products (elapsed 0:00)"
    assert lines[1] == "    matmul 64x64x64: 92.2 GFLOP/s"
    assert lines[2] == "[2/4] kernels (elapsed 0:30, ETA 1:30)"  # a quarter done in 30 s
    assert lines[3] == "[3/4] memory (elapsed 0:40, ETA 0:40)"  # half done in 40 s
    assert "\r" not in out.getvalue()


def test_progress_on_a_terminal_is_one_redrawn_line_and_plain_callables_still_work():
    out = io.StringIO()
    bar = ProgressBar(out, tty=True, clock=lambda: 0.0, width=80)
    say = Reporter(bar)
    say.plan(["products", "kernels"])
    say.stage("products")
    say("matmul 64x64x64: 92.2 GFLOP/s")
    bar.finish()
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") == 4  # two draws, then the line cleared
    assert "[1/2]" not in text and "1/2 products" in text and "| matmul 64x64x64" in text
    seen: list = []
    plain = Reporter(seen.append)  # progress=print, as the GPU script passes it
    plain.plan(["products"])
    plain.stage("products")
    plain("a row")
    assert seen == ["[1/1] products", "a row"]
    assert format_duration(3725) == "1:02:05" and format_duration(59.6) == "1:00"


def test_progress_lines_carry_no_profiler_stage_markers_and_small_rates_read_in_gflops():
    pytest.importorskip("torch")
    code = ("import torch\nfrom paramcalc.calibration.sweeps import peak_rise\n"
            "print(peak_rise(torch, 'cpu', lambda: torch.ones(1000) + 1))\n"
            "import sys; sys.stderr.write('a line of our own\\n')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert int(done.stdout) >= 4000  # the measurement still happened
    assert "USDT:" not in done.stderr and "STAGE:" not in done.stderr
    assert "a line of our own" in done.stderr  # what else is written to stderr is kept
    from paramcalc.calibration.sweeps import _rate

    assert _rate(9.22e10) == "92.2 GFLOP/s" and _rate(7.98e14) == "798.00 TFLOP/s"
