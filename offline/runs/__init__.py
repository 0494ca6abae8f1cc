"""Bootstraps, the demo and the flywheel: end-to-end programs composing the other roles.

``bootstrap`` / ``bootstrap_fraud`` take a world to a published model version and loaded
Redis (CLI jobs, also called by the use cases' hooks); ``workspace`` generates and
bootstraps the shared shop world once per run; ``demo`` (``make demo``) and ``flywheel``
(``make flywheel``) are generic runners over ``offline.use_cases.OFFLINE_USE_CASES`` and
name no use case. Library code the runs need belongs in the other subpackages, not here.
"""
