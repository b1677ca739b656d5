"""The daemon's side of its link to the control server (the server's side is :mod:`srghn.deploy.server.peer`).

A thread of its own owns the DEALER connected to the server's internal socket, so that the evolution loop --
busy for seconds in a generation, at low priority -- never holds up the link: the thread pings the server every
second, says hello again when the answering pid shows that the server was restarted (and repeats the last
evolution status then), queues what the server sends (operator commands, robots' returns) for the loop to take
between generations, hands robots' transitions and returns to their listeners at once (a generation can last
tens of seconds), and hands :class:`~srghn.deploy.wire.messages.Promoted` answers to whoever waits for them. The
loop's own messages go to the thread through an inproc socket; nothing here blocks the loop except an explicit
wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

import zmq

from srghn.deploy.wire import messages as m
from srghn.errors import ServerConflict, ServerUnavailable

log = logging.getLogger("srghn.daemon.link")


class ServerLink:
    def __init__(self, ctx: zmq.Context, endpoint: str, robot: str) -> None:
        self.ctx, self.endpoint, self.robot = ctx, endpoint, robot
        self.inbox: queue.SimpleQueue[m.Message] = queue.SimpleQueue()
        """Commands and transitions from the server, for the evolution loop."""
        self.answers: dict[int, queue.SimpleQueue] = {}
        self.welcome: m.Welcome | None = None
        self.welcomed = threading.Event()
        self.server_pid: int | None = None
        self.restarts = 0
        """Restarts of the server this link noticed (and attached again after)."""
        self.last_heard = 0.0
        self.last_status: m.Evolution | None = None
        self.assignments: dict[str, m.Assign] = {}
        """The last regime assigned to each robot, said again to a restarted server (which forgot them)."""
        self.below_safe: dict[str, m.ServeSafe] = {}
        """By regime: the champion its robots are not to be served (below the safe action), said again likewise."""
        self.on_transitions: Callable[[m.Transitions], None] | None = None
        """Where robots' transitions go, on this thread, as they come (default: the inbox, like everything else)."""
        self.on_returns: Callable[[m.Returns], None] | None = None
        """Hears robots' episode returns as they arrive (the searches on the robot), besides the loop's inbox."""
        self._pipe_address = f"inproc://srghn-link-{id(self)}"
        self._out = ctx.socket(zmq.PAIR)
        self._out.bind(self._pipe_address)
        self._lock = threading.Lock()  # the loop and the CLI's event printer may both send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="srghn-link", daemon=True)

    # -- the loop's side ---------------------------------------------------------------------------------------------

    def start(self, timeout_s: float, give_up: Callable[[], str | None] = lambda: None) -> m.Welcome | None:
        """Connect and wait for the server's welcome; :class:`ServerUnavailable` if none comes in time or
        ``give_up()`` says why not to wait any more (its text ``""``: stop waiting quietly, and return None),
        :class:`ServerConflict` if the server refuses this daemon."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.welcomed.wait(0.2):
            why = give_up()
            if why == "":
                return None
            if why is not None or time.monotonic() > deadline:
                raise ServerUnavailable(why or f"the control server at {self.endpoint} did not answer within "
                                        f"{timeout_s:.0f} s")
        if self.welcome.refused:
            raise ServerConflict(f"the control server on this state directory refuses this daemon: "
                                 f"{self.welcome.refused}")
        return self.welcome

    def send(self, message: m.Message) -> None:
        if isinstance(message, m.Evolution):
            self.last_status = message
        elif isinstance(message, m.Assign):
            self.assignments[message.client] = message
        elif isinstance(message, m.ServeSafe):
            self.below_safe[message.regime] = message
        with self._lock:
            self._out.send(m.encode(message))

    def promote(self, token: int, champion: str, reason: str, timeout_s: float) -> m.Promoted | None:
        """Ask the server to promote and wait for its answer (None: none in time)."""
        answer: queue.SimpleQueue = queue.SimpleQueue()
        self.answers[token] = answer
        try:
            self.send(m.Promote(token, champion, reason))
            return answer.get(timeout=timeout_s)
        except queue.Empty:
            return None
        finally:
            self.answers.pop(token, None)

    def adopt(self, token: int, champion: str, regime: str, reason: str, timeout_s: float) -> m.Promoted | None:
        """Ask the server to put a regime's stored champion back live and wait for its answer (None: none in
        time)."""
        answer: queue.SimpleQueue = queue.SimpleQueue()
        self.answers[token] = answer
        try:
            self.send(m.Adopt(token, champion, regime, reason))
            return answer.get(timeout=timeout_s)
        except queue.Empty:
            return None
        finally:
            self.answers.pop(token, None)

    def take(self, wait_s: float = 0.0) -> list[m.Message]:
        """What the server sent since the last call (waiting up to ``wait_s`` for a first message)."""
        taken = []
        try:
            taken.append(self.inbox.get(timeout=wait_s) if wait_s > 0 else self.inbox.get_nowait())
            while True:
                taken.append(self.inbox.get_nowait())
        except queue.Empty:
            return taken

    @property
    def connected(self) -> bool:
        return time.monotonic() - self.last_heard < m.HEARTBEAT_EXPIRY_S

    def close(self, last: m.Message | None = None, wait_for: type[m.Message] | None = None,
              timeout_s: float = 15.0) -> m.Message | None:
        """Send ``last`` (a Detach or a Stop), wait up to ``timeout_s`` for a ``wait_for`` answer, and stop."""
        answer: queue.SimpleQueue = queue.SimpleQueue()
        if wait_for is not None:
            self.answers[-1] = answer
        if last is not None:
            self.send(last)
        reply = None
        if wait_for is not None:
            try:
                reply = answer.get(timeout=timeout_s)
            except queue.Empty:
                log.warning("the server did not answer %s within %.0f s", last.op.value, timeout_s)
        self._stop.set()
        self._thread.join(5.0)
        self._out.close(0)
        return reply

    # -- the thread --------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)  # a last Detach / Stop still leaves after close
        sock.connect(self.endpoint)
        pipe = self.ctx.socket(zmq.PAIR)
        pipe.connect(self._pipe_address)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(pipe, zmq.POLLIN)
        hello = m.encode(m.Hello(os.getpid(), self.robot))
        sock.send(hello)
        next_ping = time.monotonic() + m.HEARTBEAT_INTERVAL_S
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(max(0.0, next_ping - time.monotonic()) * 1000))
                if pipe in ready:
                    while True:
                        try:
                            sock.send(pipe.recv(zmq.NOBLOCK), zmq.NOBLOCK)
                        except zmq.Again:
                            break
                if sock in ready:
                    while True:
                        try:
                            frame = sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._received(frame, sock, hello)
                if time.monotonic() >= next_ping:
                    next_ping = time.monotonic() + m.HEARTBEAT_INTERVAL_S
                    with contextlib.suppress(zmq.Again):  # the server is away and its queue full: next ping
                        sock.send(m.encode(m.Heartbeat(os.getpid())), zmq.NOBLOCK)
            while True:  # hand what the loop sent last to the socket before it closes (linger sends it)
                try:
                    sock.send(pipe.recv(zmq.NOBLOCK), zmq.NOBLOCK)
                except zmq.Again:
                    break
        except Exception:
            log.exception("the link to the server failed")
        finally:
            pipe.close(0)
            sock.close()

    def _received(self, frame: bytes, sock: zmq.Socket, hello: bytes) -> None:
        try:
            message = m.decode(frame)
        except m.MessageError as exc:
            log.warning("bad message from the server: %s", exc)
            return
        self.last_heard = time.monotonic()
        if isinstance(message, m.Welcome):
            self.welcome, self.server_pid = message, message.pid
            self.welcomed.set()
        elif isinstance(message, m.Heartbeat):
            if self.server_pid is not None and message.pid != self.server_pid:
                log.warning("the control server was restarted (pid %s, was %s): attaching again", message.pid,
                            self.server_pid)
                self.server_pid = message.pid
                self.restarts += 1
                with contextlib.suppress(zmq.Again):
                    sock.send(hello, zmq.NOBLOCK)
                    if self.last_status is not None:
                        sock.send(m.encode(self.last_status), zmq.NOBLOCK)
                    for said in [*self.assignments.values(), *self.below_safe.values()]:
                        sock.send(m.encode(said), zmq.NOBLOCK)
        elif isinstance(message, m.Promoted):
            answer = self.answers.get(message.token)
            if answer is not None:
                answer.put(message)
        elif isinstance(message, m.Stopped):
            answer = self.answers.get(-1)
            if answer is not None:
                answer.put(message)
        elif isinstance(message, m.Transitions) and self.on_transitions is not None:
            self.on_transitions(message)
        else:
            if isinstance(message, m.Returns) and self.on_returns is not None:
                self.on_returns(message)
            self.inbox.put(message)
