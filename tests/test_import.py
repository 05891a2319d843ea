import subprocess
import sys


def test_import_pulls_in_no_framework():
    code = ("import sys, paramcalc; "
            "paramcalc.estimate(paramcalc.seed_model('flat'), input_shape=(20020,)).summary(); "
            "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'jax', 'numpy', 'sympy') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
