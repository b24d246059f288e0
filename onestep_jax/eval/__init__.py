"""Evaluation: sample metrics, mixture metrics, feature metrics (FID/KID/PR), feature extractors, plots."""
