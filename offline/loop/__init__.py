"""The flywheel's organize + learn half, shared by the use cases.

``training_set`` joins the served-decision logs with their outcomes (DuckDB, label windows)
and the feature history into training rows (``build_labelled_rows`` for any binary use
case); ``retrain`` trains on them with a time-based split, compares against the current
model and publishes only if it is not worse; ``publish_gate`` is that gate (one for every
use case) and the binary building blocks (training, Platt calibration, AUC, log-loss).
Code here works on what the service logged and served, not on a simulated world: nothing
under offline/loop imports offline.simulation or offline.runs
(tests/offline/test_loop_layers.py).
"""
