"""edge-runtime: continual-learning visual anomaly detection for edge boards.

Data flows one way: capture -> trunk -> (replay store | tails) -> anomaly map -> verdict.
This package must stay importable without torch: the serving process never loads it.
"""

__version__ = "0.1.0"
