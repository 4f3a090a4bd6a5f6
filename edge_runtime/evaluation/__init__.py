"""Test-set metrics (numpy; scipy for AU-PRO's regions): benchmarks and the CLI, never
the daemon."""
