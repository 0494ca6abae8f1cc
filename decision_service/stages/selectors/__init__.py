"""selectors stages."""
