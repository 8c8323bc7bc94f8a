"""Speed benchmarks: each figure is a ratio of two timings taken in the same run."""
