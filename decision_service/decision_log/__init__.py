"""The flywheel's "collect" half: served decisions and observed outcomes as Parquet logs.

Named ``decision_log`` so it never shadows the standard library's ``logging``.
"""
