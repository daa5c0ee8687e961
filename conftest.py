# Shared fixtures for every package's tests: the session broker, unique names, sample events.
pytest_plugins = ["raftloop_core.testing"]
