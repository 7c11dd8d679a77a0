"""Tests of one piece in-process: codecs, planners, config, derivations, the vocabulary."""
