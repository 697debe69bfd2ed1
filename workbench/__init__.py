"""Structured-matrix workbench."""
