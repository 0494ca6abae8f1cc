"""Pipeline stages, one module per stage, grouped by kind (the folder names are the kinds).

Stages hold only their own logic; the executor (decision_service/executor.py) owns timing,
deadlines, failure policy and degraded flags.
"""
