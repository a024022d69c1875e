"""Console panes, one module each. Formatting helpers in `fmt` (no Textual) are shared with --once."""
