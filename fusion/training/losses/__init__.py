"""Training losses, one small module each."""
