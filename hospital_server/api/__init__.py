"""HTTP API: dependencies in ``deps``, one router module per resource in ``routes``."""
