"""Benchmarks of features and matchers: homography, relative pose, efficiency, the results log, figures."""
