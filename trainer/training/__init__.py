"""The training room: `train.run(config) -> results`, the one training path that main, the tuner, the doctor,
benchmarks and tests call. It imports neither evaluation nor serving (tests/test_rooms.py)."""
