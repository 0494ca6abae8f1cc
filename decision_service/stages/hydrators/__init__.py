"""hydrators stages."""
