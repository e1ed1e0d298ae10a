"""Serving: the loaded model, the catalogue index, scoring, filters and explanations.

Imports nothing from ``training`` but :mod:`training.artifact` (numpy only).
"""
