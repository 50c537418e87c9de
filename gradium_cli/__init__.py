"""gradium: the command-line voice tool for the Gradium text-to-speech API."""

__version__ = "0.1.0"
