"""Shared pytest configuration for the gradium_cli tests."""

# The real test audio device (private PulseAudio null sink): fixture `audio_device`.
pytest_plugins = ["tests.audio_device"]
