"""The benchmark suite of scripts/benchmark.py, one module per section (``make bench`` runs them all)."""
