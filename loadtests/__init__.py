"""Load generators and benchmarks (see loadtests/README.md)."""
