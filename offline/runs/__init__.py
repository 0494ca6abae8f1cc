"""Bootstraps, demos and the flywheel runs: end-to-end programs composing the other roles.

``bootstrap`` / ``bootstrap_fraud`` take a world to a published model version and loaded
Redis; ``demo`` / ``demo_fraud`` start a server and show answers (``make demo``); ``flywheel`` /
``flywheel_fraud`` run serve -> log -> organize -> learn turns (``make flywheel``). Library
code the runs need belongs in the other subpackages, not here.
"""
