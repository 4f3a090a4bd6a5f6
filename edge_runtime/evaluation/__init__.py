"""Test-set metrics (scikit-learn, scipy): benchmarks and the CLI, never the daemon."""
