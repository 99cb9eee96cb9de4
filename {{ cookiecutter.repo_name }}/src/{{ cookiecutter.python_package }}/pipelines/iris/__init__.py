"""Fits three classifiers to the iris measurements side by side and compares them."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
