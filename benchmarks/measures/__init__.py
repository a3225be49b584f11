"""One module per worker measure; each exposes ``run(settings, backend) -> list[Record]``."""
