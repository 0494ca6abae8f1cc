"""The observation API: outcomes of decisions, their log and their effect on online state."""
