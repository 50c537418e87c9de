"""prompt-toolkit pieces of the interactive console: history file and Tab completion."""

from __future__ import annotations

from collections.abc import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory

from gradium_cli.backend import data_dir
from gradium_cli.console.commands import COMMANDS, JSON_CONFIG_KEYS, STRING_FIELDS

HISTORY_FILE = "ws-raw-history"
NO_ARGUMENTS = ("/flush", "/eos", "/ping", "/reconnect", "/pretty", "/last", "/help", "/quit")
SETUP_KEYS = (*STRING_FIELDS, "close_ws_on_eos", "json_config", "retry_for_s", *JSON_CONFIG_KEYS)


def history() -> History:
    """Lines typed in earlier sessions (the platform data dir), or this session's only if unwritable."""
    path = data_dir() / HISTORY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


class CommandCompleter(Completer):
    """Tab completes slash commands, and setup keys after /setup."""

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/"):
            return
        if " " not in text:
            for command in COMMANDS:
                if command.startswith(text.lower()):
                    end = "" if command in NO_ARGUMENTS else " "
                    yield Completion(command + end, start_position=-len(text), display=command)
            return
        if text.split(" ", 1)[0] == "/setup":
            word = document.get_word_before_cursor(WORD=True)
            if "=" in word:
                return
            for key in SETUP_KEYS:
                if key.startswith(word):
                    yield Completion(key + "=", start_position=-len(word))
