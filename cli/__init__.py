"""Command-line entry points (parse arguments, select the backend, then import Keras)."""
