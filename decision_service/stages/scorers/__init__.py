"""scorers stages: models that score candidates or one entity."""
