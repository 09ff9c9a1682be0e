"""Benchmarks: speed, memory and scale, each headline figure a ratio measured in one run (`python -m benchmarks`).

See benchmarks/README.md for what each figure means and how it is computed.
"""
