"""Quality: scorers over recorded outputs against an eval set's references
(:mod:`~harness.quality.scorers`), the per-run scores table
(:mod:`~harness.quality.score`, ``RUN_DIR/scores/scores.parquet``), and the report's
``quality`` section with per-arm rates and paired arm-vs-arm tests
(:mod:`~harness.quality.section`, rendered by :mod:`~harness.quality.report`)."""
