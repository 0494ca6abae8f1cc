"""Model training: the trainers that turn features and labels into model artifacts.

``train_ranker`` (LightGBM lambdarank on serving-style candidates, with baselines),
``train_fraud`` (the fraud classifier and its neighbour index) and ``lightgbm_params``, which
holds ``LightGbmSettings``, the one declaration of the LightGBM knobs every trainer (including
the loop's retrain) uses. Trainers take prepared data and return artifacts and metrics; they
do not publish to the registry by themselves.
"""
