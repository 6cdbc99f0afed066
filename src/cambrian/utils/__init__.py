"""Small shared helpers (weight files)."""
