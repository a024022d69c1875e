"""gen404 operations console (Textual). Never imports torch."""
