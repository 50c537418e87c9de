"""`gradium ws-raw`: a console for the TTS WebSocket protocol (see gradium_cli/console/core.py)."""
