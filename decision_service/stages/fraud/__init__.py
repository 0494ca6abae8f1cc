"""Stages of the fraud pipeline: load context -> features -> neighbours -> score -> policy -> commit."""
