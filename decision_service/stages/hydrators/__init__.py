"""hydrators stages: what a decision needs, read or computed (user state, features, context)."""
