"""Client-side TTS request state machine, sans I/O (PROTOCOL.md §2.2, §2.5).

It checks the order of what is sent and received and turns frames into typed
messages; the transport moves the strings. States: NEW → SETUP_SENT → STREAMING
(after ready) → ENDED (after the server's end_of_stream). The client's own
end_of_stream may come at any time after setup (the SDK sends everything before
`ready`), after which no more text is accepted.
"""

from __future__ import annotations

from enum import Enum

from gradium_cli.errors import AuthError, ProtocolError, RequestError, ServerError
from gradium_cli.protocol import messages as m


class State(Enum):
    NEW = "new"
    SETUP_SENT = "setup_sent"
    STREAMING = "streaming"
    ENDED = "ended"
    FAILED = "failed"


def error_from_server(error: m.ErrorMessage) -> ServerError | RequestError | AuthError:
    """Map an `error` frame onto the exception tree (and so onto an exit code)."""
    text = error.message
    lowered = text.lower()
    code = f" ({error.code})" if error.code is not None else ""
    if "api key" in lowered:
        return AuthError(f"server refused the API key: {text}", hint="check `gradium config get api-key`")
    if error.code == m.POLICY_VIOLATION:
        return RequestError(f"server refused the request: {text}{code}")
    return ServerError(f"server error: {text}{code}")


class TtsSession:
    """One request: setup, text*, end_of_stream out; ready, audio/text*, end_of_stream in."""

    def __init__(self, client_req_id: str | None = None) -> None:
        self.client_req_id = client_req_id
        self.state = State.NEW
        self.eos_sent = False
        self.ready: m.Ready | None = None

    # ------------------------------------------------------------------ sending

    def setup(self, setup: m.Setup) -> str:
        if self.state is not State.NEW:
            raise ProtocolError(f"setup sent twice (state {self.state.value})")
        setup.client_req_id = self.client_req_id
        self.state = State.SETUP_SENT
        return m.encode(setup)

    def text(self, text: str) -> str:
        self._check_can_send("text")
        return m.encode(m.TextInput(text, client_req_id=self.client_req_id))

    def end_of_stream(self) -> str:
        self._check_can_send("end_of_stream")
        self.eos_sent = True
        return m.encode(m.EndOfStream(client_req_id=self.client_req_id))

    def _check_can_send(self, what: str) -> None:
        if self.state is State.NEW:
            raise ProtocolError(f"{what} before setup: send setup first")
        if self.eos_sent:
            raise ProtocolError(f"{what} after end_of_stream")
        if self.state in (State.ENDED, State.FAILED):
            raise ProtocolError(f"{what} after the request ended")

    # ---------------------------------------------------------------- receiving

    def receive(self, frame: str | bytes) -> m.ServerMessage:
        return self.receive_message(m.decode_server(frame))

    def receive_message(self, message: m.ServerMessage) -> m.ServerMessage:
        """Advance on a decoded frame; raises on error frames and illegal order."""
        if isinstance(message, m.ErrorMessage):
            self.state = State.FAILED
            raise error_from_server(message)
        if self.state is State.NEW:
            raise ProtocolError(f"server sent {message.type} before any setup")
        if self.state is State.SETUP_SENT:
            if not isinstance(message, m.Ready):
                raise ProtocolError(f"expected ready as the first server message, got {message.type}")
            self.ready = message
            self.state = State.STREAMING
        elif self.state is State.STREAMING:
            if isinstance(message, m.Ready):
                raise ProtocolError("server sent ready twice for one request")
            if isinstance(message, m.EndOfStream):
                self.state = State.ENDED
        else:
            raise ProtocolError(f"server sent {message.type} after the request ended")
        return message

    @property
    def done(self) -> bool:
        return self.state in (State.ENDED, State.FAILED)
