"""The flywheel's organize + learn half, shared by the use cases.

``training_set`` joins the served-decision logs with their outcomes (DuckDB, label windows)
and the feature history into training rows; ``retrain`` trains on them with a time-based
split, compares against the current model and publishes only if it is not worse. Code here
works on what the service logged, not on a simulated world.
"""
