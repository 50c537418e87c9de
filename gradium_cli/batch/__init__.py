"""`gradium batch`: many files from one manifest, over a few multiplexed WebSockets.

manifest.py reads rows (TXT, CSV, JSONL) and turns them into items; state.py
keeps the resumable record of finished items; runner.py sends them; progress.py
reports. The Typer command is gradium_cli/cli/batch.py.
"""
