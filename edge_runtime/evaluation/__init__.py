"""Metrics (numpy; scipy for AU-PRO's regions) for benchmarks and the CLI, and the one
place the daemon evaluates: the choice of a trained product's serving path on synthetic
defects made from its own captures (a child process of the API, never the API itself)."""
