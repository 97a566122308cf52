"""The deltastore command-line interface."""
