"""The canary judge: is the candidate arm worse than the baseline arm? GO / NO_GO / INCONCLUSIVE.

Kayenta's stages, one module each, in the order the data flows:

1. :mod:`harness.judge.settings`: the ``judge`` config node, every setting with its default;
2. :mod:`harness.judge.preprocess`: the I/O edge, run directories -> typed samples
   (:mod:`harness.judge.samples`), paired on ``pair_id`` / ``sample_id`` when they can be;
3. :mod:`harness.judge.statistics`: one function per kind of metric, the estimate of the
   change (candidate vs baseline), its intervals, a test and its p-value;
4. :mod:`harness.judge.classify`: each metric's interval against its margin -> Pass / High /
   Low / Undecided / NoData;
5. :mod:`harness.judge.decide`: the weighted score and the decision with its reason codes.

:mod:`harness.judge.judge` runs the stages; :mod:`harness.judge.section` puts the verdict at
the top of the report; :mod:`harness.judge.cli` is ``harness judge``;
:mod:`harness.judge.calibration` measures the judge's own error rates on synthetic runs.
"""
