"""Workflows: orchestration of the layers below (experiment, cross-validation, demo); no numerics here."""
