"""Weir: the Faust application, its settings, models, CLI and web pages."""
