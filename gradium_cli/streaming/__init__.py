"""Live text-to-speech: incremental input, flush rules, events, and the run loop of `gradium stream`."""
