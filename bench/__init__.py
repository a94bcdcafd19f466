"""Benchmarks of the Neurelay gateway against python-socketio and NATS's WebSocket listener.

`python -m bench SCENARIO` starts the systems, drives them with the Go load
generator in bench/loadgen and writes results to bench/results/; see
docs/performance.md.
"""
