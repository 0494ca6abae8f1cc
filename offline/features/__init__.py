"""Batch features and their materialization: everything that turns raw data into features.

Point-in-time feature computation (``snapshot`` for USER / ITEM groups, ``fraud_features`` for
payment profiles), the feature history every materialization appends to (read back by the
training set's as-of joins), ``materialize`` (snapshots -> Redis through the online store's
writers), item / user ``embeddings`` and the candidate index built from them (``build_index``).
Modules here compute and store features; they do not train models.
"""
