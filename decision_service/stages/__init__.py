"""Pipeline stages of every use case, one module per stage, grouped by kind (folder = kind):

  sources       candidate retrieval (FAISS ANN, popular)
  filters       boolean masks over candidates (request exclusions, seen items, stock, categories)
  hydrators     state and features a decision needs (user state, one MGET of packed vectors,
                the fraud context read, request-time features, neighbour statistics)
  scorers       models (LightGBM ranker, LightGBM fraud model)
  selectors     ranked lists from scores (top-k with a category cap, exploration slots)
  policies      scores + rules -> an action with reasons
  committers    record a decision with its idempotency key in one store operation
  side_effects  after the answer is built: decision index, decision log

``base.py`` / ``fraud_base.py``: each use case's per-request state and the contract of each
stage kind it uses. Stages hold only their own logic; the engine (decision_service/engine.py)
and each use case's flow own timing, deadlines, failure policy and degraded flags.
"""
