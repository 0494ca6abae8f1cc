"""scorers stages."""
