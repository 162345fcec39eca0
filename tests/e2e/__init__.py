"""End-to-end tests: the whole pipeline as `phd demo` runs it (real children, real network)."""
