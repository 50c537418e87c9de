"""Shared pytest configuration for the gradium_cli tests."""

# The real test audio device (private PulseAudio null sink): fixture `audio_device`.
# Real local servers on 127.0.0.1: fixtures `local_server`, `server_factory`, `serve_process`.
pytest_plugins = ["tests.audio_device", "tests.servers"]
