"""``make bench``: throughput and latency as ratios against a baseline run side by side."""
