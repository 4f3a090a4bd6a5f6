"""Long jobs that run in their own process (they import torch; the API process never does)."""
