"""Command-level workflows: what a command does between parsing its arguments and exiting.

Layering (docs/architecture.md): ``cli -> workflows -> model / data / refine / ... -> physics``.
"""
