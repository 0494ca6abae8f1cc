"""Offline half: example data, batch features, training, the learning loop, and the runs.

Subpackages by role; each job runs alone (``python -m offline.<role>.<job> --help``):
  simulation/  example data generators: world (seeded e-commerce users, items, interactions,
               truth), fraud_world (payments with labelled fraud patterns)
  features/    batch features and materialization: snapshot (USER / ITEM snapshot as of a time),
               fraud_features (point-in-time payment profiles), feature_history, materialize
               (snapshot -> Redis through the online store's writers), embeddings (truncated
               SVD), build_index (FAISS inner-product index, chosen by measured recall@200)
  training/    model training: train_ranker (LightGBM lambdarank with baselines), train_fraud,
               lightgbm_params (``LightGbmSettings``, the one LightGBM settings type)
  loop/        the flywheel's organize + learn half shared by use cases: training_set (logs
               joined with outcomes), retrain (train, compare, publish if not worse)
  runs/        bootstraps (all of the above for a world -> a published model version), demos
               and the flywheel runs (``make demo``, ``make flywheel``)
"""
