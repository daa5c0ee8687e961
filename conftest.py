# Shared fixtures for every package's tests: the session broker, unique names, sample events,
# and the offline models (converted SmolLM2, tiny Llama).
pytest_plugins = ["raftloop_core.testing", "raftloop_models.testing"]
