"""Replay memory: codecs (how samples are compressed) and the on-disk store (what is kept)."""
