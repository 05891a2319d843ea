"""Device profiles measured by `paramcalc calibrate`, shipped as data."""
