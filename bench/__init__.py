"""Reproducible benchmarks of utvm's host-driven path against peers on the same machine.

Run ``python -m bench`` from the repository root; see docs/performance.md.
"""
