"""One module per pipeline; each reads top to bottom as decode -> window/rules -> sink."""
