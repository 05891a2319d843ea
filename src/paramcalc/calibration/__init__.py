"""Measuring a machine with the framework that trains: the sweeps (``sweeps``), merging repeated runs
(``merge``) and the progress a calibration reports (``report``). The watch on what other processes took
meanwhile lives in :mod:`paramcalc.core.contention`, since an estimate judges a stored profile by it too.
The only place outside the front-ends that imports a framework, and only when a measurement is asked for."""
