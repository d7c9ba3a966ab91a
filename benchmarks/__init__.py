"""gradtx's benchmark suite: ``python -m benchmarks [--quick]`` prints the comparison table."""
