"""Hybrid routing: one policy object (policy.py, configured by settings.py) driven live by the
router arm (live.py) and offline by the what-if replay of a mirrored run (replay.py,
whatif.py)."""
