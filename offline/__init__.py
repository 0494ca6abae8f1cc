"""Offline half: synthetic world, batch features, embeddings, index, ranker, bootstrap.

Each job runs alone (``python -m offline.<job> --help``):
  world        seeded synthetic e-commerce world (users, items, interactions, truth)
  features     USER / ITEM snapshot as of a time (no events at or after it)
  embeddings   truncated-SVD user and item embeddings
  build_index  FAISS inner-product index, chosen by measured recall@200
  train_ranker LightGBM lambdarank on serving-style candidates, with baselines
  materialize  serving snapshot -> Redis through the online store's writers
  bootstrap    all of the above for a world -> a published model version
"""
