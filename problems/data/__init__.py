"""Bundled data files (package data, read through ``importlib.resources``); see PROVENANCE.md."""
