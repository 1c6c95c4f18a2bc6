"""The libwebsockets decoder: lws callback events (wire-v1) become Tracker calls.

lws reports every wsi through the same callbacks, with traps that look like leaks but are not
(see docs/lws-lifecycle.md). The rules this decoder applies, per source and context,
with identity = (context pointer, wsi pointer, generation):

- fake-wsi reasons (PROTOCOL_INIT/DESTROY, EVENT_WAIT_CANCELLED, ...) are never tracked;
- a listen wsi is announced by LISTEN (-6: per vhost, `n` sockets on lws 4.3+, one per port on
  4.1) without its pointer; the first FILTER_NETWORK_CONNECTION (17) or bare WSI_DESTROY of an
  unknown pointer on that vhost and port claims it. Without a LISTEN (an older shim) a listen
  wsi is known from its 17, or from a bare WSI_DESTROY for a pointer never seen;
- a bare WSI_DESTROY for a pointer never seen is classified by its lws tag where the version
  gives one (lws_tags.py): lws 4.5+ ends some clients (`wsicli`) that way;
- an accepted server wsi is the WSI_CREATE (29) that follows its 17 synchronously: it is
  opened at once as h1-server with the peer the 17 carried;
- any other WSI_CREATE waits until a later callback says what it is: a transaction with a
  network wsi (h2 stream, whose network wsi becomes h2-server), RAW_ADOPT (raw). One that never
  says (the adopt-bail asymmetry frees it without WSI_DESTROY) never enters the table;
- a client is first seen at CLIENT_HTTP_BIND_PROTOCOL (85) / CONNECTING (105) but only enters the
  table once the connect call survived (19, 105, 29 or CLIENT_CONNECTION_ERROR): a lone 85
  whose pointer is reused (or that is still alone when its context ends) is lws 4.1's
  synchronous DNS failure, not a leak; WSI_DESTROY without WSI_CREATE is normal for clients; a
  second WSI_CREATE on a client pointer after a redirect (CLIENT_HTTP_REDIRECT, 104) is the same
  logical wsi reconnecting, and the redirect response ends its first transaction;
- peers are normalised: an IPv4-mapped IPv6 address (dual-stack listeners) becomes the IPv4
  address, so the peer of 17 ("[::ffff:a.b.c.d]:port") and of 19 ("::ffff:a.b.c.d") agree;
- a WSI_CREATE on a live server pointer means the old wsi never got its WSI_DESTROY: it is a
  certain leak (identity_reused) and a new wsi starts. So does the accept's WSI_CREATE (the one
  that follows a 17) on a live client pointer: an accepted connection is never a client
  reconnecting, the client's WSI_DESTROY was lost;
- transactions run from FILTER_HTTP_CONNECTION (18) (HTTP_CONFIRM_UPGRADE (86) for upgrades) to
  DROP with "lws_http_transaction_completed", HTTP_FILE_COMPLETION, CLOSED_HTTP or WSI_DESTROY;
  the closing DROP is never relied on; client transactions from the handshake to
  COMPLETED_CLIENT_HTTP. A server response status comes as HTTP_STATUS (-7); one on a wsi with
  no transaction open is a request lws answered itself (a refused pipelined request): a
  transaction of its own, marked refused. A stream's transaction also counts on its h2
  connection;
- ESTABLISHED (0) makes a server wsi ws-server, CLIENT_ESTABLISHED (3) a client ws-client;
- CONTEXT_DESTROYED or BYE end every context left: live wsis are certain leaks
  (context_destroyed); a silent source makes them suspects;
- a process that is gone did not leak: its wsis are abandoned (counted apart, no verdict) on
  FATAL (crashed), when its pid is gone from this host, when a new run of the same program on the
  same host finds it silent or quiet for three heartbeats, or when HELLO comes again under the
  same src (exited), and when it stays silent past the source expiry (expired). Lines that still
  arrive from a process known to be gone are counted and ignored;
- a HELLO with `unobserved` is a shim passing through (an lws version it does not know): the
  source is listed as unobserved, with its reason, until it says BYE or expires;
- lost lines (a sequence gap) make the source uncertain for good: every context it has, and
  every context it opens later, is `Context.uncertain`, so each leak finding on its wsis from
  then on (whatever the rule: idle, evicted, context_destroyed...) carries
  `lws.leak.uncertain`;
- at most `max_sources` sources are kept (least recently heard first out). A new source beyond
  it first pushes out the least recently heard one without contexts (all destroyed, or none
  yet; counted as `sources_forgotten`); failing that, the least recently heard one anyway: its
  live wsis become suspects (source_lost, as for silence) and its contexts end (counted as
  `sources_evicted`). A source pushed out that speaks again starts afresh.
Everything uses the producer's own timestamps (`t`).
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lwsobs.core.model import Context, Wsi
from lwsobs.core.policy import NS
from lwsobs.core.roles import AbandonReason, LeakRule, Role
from lwsobs.core.tracker import Tracker
from lwsobs.sources.lws.process import ProcessWatch, unobserved_reason
from lwsobs.sources.lws.reasons import FAKE_WSI_REASONS
from lwsobs.sources.lws.reasons import LwsReason as R
from lwsobs.sources.lws.sequence import DEFAULT_MAX_SOURCES
from lwsobs.sources.lws.tags import TagKind, tag_kind
from lwsobs.sources.lws.wire import Event, PseudoEvent, source_label

log = logging.getLogger("lwsobs.lws")

_TXN_COMPLETED = "lws_http_transaction_completed"
# The DROP before a redirect's reconnect: lws 4.1.6 passes the name of lws_client_reset() itself;
# "client_reset" is the reason of the BIND that follows (a DROP only if a bind was left open).
_CLIENT_RESET = frozenset({"client_reset", "lws_client_reset"})
_V4_MAPPED = "::ffff:"
DEFAULT_HEARTBEAT_NS = 2 * NS  # the shim's heartbeat when its HELLO does not say
_QUIET_HEARTBEATS = 3  # a run of a program quiet this many heartbeats is no longer running
_ENDED_MEMORY = 1024  # processes known to be gone, remembered to ignore their late lines
_TAG_ROLES = {
    TagKind.CLIENT: Role.H1_CLIENT,
    TagKind.ACCEPTED: Role.H1_SERVER,
    TagKind.STREAM: Role.H2_STREAM,
    TagKind.LISTEN: Role.LISTEN,
    TagKind.INTERNAL: Role.INTERNAL,
}
# The accept pair: FILTER_NETWORK_CONNECTION announces it, the WSI_CREATE after it is the wsi.
_ACCEPT_REASONS = frozenset({R.FILTER_NETWORK_CONNECTION, R.WSI_CREATE})
# Callbacks that only show activity: they keep a wsi from looking idle.
_ACTIVITY = frozenset(
    {
        R.RECEIVE,
        R.RECEIVE_PONG,
        R.CLIENT_RECEIVE,
        R.CLIENT_RECEIVE_PONG,
        R.CLIENT_WRITEABLE,
        R.SERVER_WRITEABLE,
        R.HTTP_BODY,
        R.HTTP_WRITEABLE,
        R.RECEIVE_CLIENT_HTTP,
        R.RECEIVE_CLIENT_HTTP_READ,
        R.CLIENT_HTTP_WRITEABLE,
        R.RAW_RX,
        R.RAW_WRITEABLE,
    }
)


def normalise_peer(peer: str | None) -> str | None:
    """The shim's peer text in one form: `a.b.c.d:port`, `[v6]:port`, or the address alone.

    A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6 addresses: 17 reports
    `[::ffff:a.b.c.d]:port` and 19 `::ffff:a.b.c.d`. Both become the plain IPv4 address, so the
    two callbacks of one connection name the same peer and spans get a usable address.
    """
    if not peer:
        return None
    address, port = peer, ""
    if peer.startswith("["):
        close = peer.find("]")
        if close > 0:
            address = peer[1:close]
            rest = peer[close + 1 :]
            port = rest[1:] if rest.startswith(":") else ""
    elif peer.count(":") == 1:  # a.b.c.d:port (a bare IPv6 address has at least two colons)
        address, _, port = peer.partition(":")
    if address[: len(_V4_MAPPED)].lower() == _V4_MAPPED and "." in address:
        address = address[len(_V4_MAPPED) :]
    if ":" in address:  # IPv6: brackets keep the port apart
        return f"[{address}]:{port}" if port else address
    return f"{address}:{port}" if port else address


def _address(peer: str | None) -> str | None:
    """The address part of a normalised peer."""
    if peer is None:
        return None
    if peer.startswith("["):
        return peer[1 : peer.find("]")]
    if peer.count(":") == 1:
        return peer.partition(":")[0]
    return peer


@dataclass
class _WsiState:
    """What the decoder knows about one pointer of one context."""

    created_t: int  # first sighting: WSI_CREATE, or the first client callback
    wsi: Wsi | None = None  # None until classified (then it is in the Tracker's table)
    client: bool = False
    created: bool = False  # WSI_CREATE seen (clients get it only once connected)
    afd: int | None = None  # accepted server wsi: the fd its 17 announced (19 reports it)
    redirecting: bool = False
    # the open transaction's response status: ESTABLISHED_CLIENT_HTTP, or HTTP_STATUS (server)
    status: int | None = None
    # a client's request, from its first line (the connect call's arguments)
    method: str | None = None
    uri: str | None = None
    addr: str | None = None
    port: int | None = None  # a client's target port; a listen wsi's port
    vh: str | None = None  # a listen wsi announced by LISTEN: its vhost


@dataclass
class _ContextState:
    ctx: Context
    first_t: int  # the context's first event: the best guess for when its listen wsis began
    last_t: int = 0  # its latest event: the last time the process was known to run
    wsis: dict[str, _WsiState] = field(default_factory=dict)
    # listen wsis LISTEN announced, their pointers not known yet (the next 17 or bare 30 tells)
    listening: list[_WsiState] = field(default_factory=list)
    # the accept announced by the last FILTER_NETWORK_CONNECTION, consumed by the next WSI_CREATE
    accept_peer: str | None = None
    accept_fd: int | None = None
    accept_pending: bool = False


@dataclass
class _SourceState:
    label: str
    contexts: dict[str, _ContextState] = field(default_factory=dict)
    uncertain: bool = False  # lines were lost: its contexts are (and will be) uncertain
    host: str | None = None  # from its HELLO
    pid: int | None = None
    heartbeat_ns: int = DEFAULT_HEARTBEAT_NS
    last_t: int = 0  # its latest pseudo-event (its contexts keep their own)
    silent: bool = False  # declared silent and not heard since
    silent_since: int | None = None  # when (lwsobs' clock) it was declared silent
    unobserved: str | None = None  # a shim passing through says why (HELLO `unobserved`)

    def latest(self) -> int:
        """The producer time of the last line heard from it."""
        return max([self.last_t, *(state.last_t for state in self.contexts.values())])


class LwsDecoder:
    """Implements ingest.pipeline.EventConsumer; one decoder serves every lws source.

    `max_sources` bounds the sources it keeps state for (the ingest pipeline remembers as many
    by default, so a source it still hears is not pushed out here first).
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        max_sources: int = DEFAULT_MAX_SOURCES,
        processes: ProcessWatch | None = None,
        expiry_s: float | None = None,
    ) -> None:
        """`processes` answers whether a producer's pid still runs (None: never asked, as
        for a replay); `expiry_s` is how long a source may stay silent, after it was declared
        silent, before its wsis are abandoned as expired (None: never)."""
        if max_sources < 1:
            raise ValueError(f"max_sources must be at least 1, got {max_sources}")
        if expiry_s is not None and not expiry_s >= 0:
            raise ValueError(f"expiry_s must be >= 0, got {expiry_s}")
        self.tracker = tracker
        self.max_sources = max_sources
        self.processes = processes
        self.expiry_ns = None if expiry_s is None else round(expiry_s * NS)
        # processes known to be gone (crashed, exited): their late lines are ignored
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._sources: dict[str, _SourceState] = {}
        # the sources of each (program, host) that said HELLO: the runs a new HELLO may end
        self._runs: dict[tuple[str, str], dict[str, None]] = {}
        # the same names least recently heard first: all of them, and those without contexts
        self._heard: OrderedDict[str, None] = OrderedDict()
        self._idle: OrderedDict[str, None] = OrderedDict()
        self._recent: _SourceState | None = None  # heard last: already last in both orders
        # the (src, ctx) of the last event, its source and context: a run of events of one
        # context skips the lookups. Valid while that source is `_recent` and the context is
        # not ended (`_end_context` clears it).
        self._recent_context: tuple[str, str | None, _SourceState | None, _ContextState] | None = (
            None
        )
        self.stats: Counter[str] = Counter()

    @property
    def source_count(self) -> int:
        """The sources the decoder keeps state for (at most `max_sources`)."""
        return len(self._sources)

    # -- EventConsumer -----------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        r = event.r
        if r < 0:
            self._pseudo(event)
            return
        if event.fake or r in FAKE_WSI_REASONS or event.wsi is None:
            self.stats["untracked"] += 1
            return
        recent = self._recent_context
        if (
            recent is not None
            and recent[0] == event.src
            and recent[1] == event.ctx
            and recent[2] is self._recent
        ):
            state = recent[3]  # the same source and context as the event before: nothing moves
        else:
            if event.src in self._ended:
                self.stats["lines_after_exit"] += 1
                return
            state = self._context(event)
            self._recent_context = (event.src, event.ctx, self._recent, state)
        state.last_t = event.t
        if r not in _ACCEPT_REASONS:
            state.accept_pending = False  # lws adopts synchronously: 17 is followed by its 29
        handler = _HANDLERS.get(r)
        if handler is not None:
            handler(self, state, event)
        elif r in _ACTIVITY:
            known = state.wsis.get(event.wsi)
            if known is not None and known.wsi is not None:
                self.tracker.touch(known.wsi, event.t)

    def lines_lost(self, src: str, count: int) -> None:
        """Lines of `src` went missing: whatever it has or opens from now on is uncertain."""
        source = self._source(src)
        source.uncertain = True
        for state in source.contexts.values():
            state.ctx.uncertain = True
        self.stats["lines_lost"] += count

    def source_silent(self, src: str, now_ns: int) -> None:
        """The producer went quiet: its live wsis become suspects (it may only be stuck)."""
        source = self._sources.get(src)
        if source is None:
            return
        source.silent = True
        source.silent_since = now_ns
        self._recent = None  # its next event goes through _source, which clears `silent`
        self._recent_context = None
        for state in source.contexts.values():
            for known in state.wsis.values():
                if known.wsi is not None and known.wsi.live:
                    self.tracker.flag(known.wsi, now_ns, LeakRule.SOURCE_LOST)

    def tick(self, now_ns: int) -> None:
        """Time passes (lwsobs' clock): end the sources whose process is gone.

        A source whose pid has left this host is abandoned (exited) at once; one silent for
        longer than the expiry after its silence was declared is abandoned as expired. Its wsis
        end at its last line: the last time the process was known to run.
        """
        for src, source in list(self._sources.items()):
            processes = self.processes
            if (
                processes is not None
                and (source.contexts or source.unobserved)
                and processes.alive(source.host, source.pid) is False
            ):
                self._abandon_source(src, source, AbandonReason.EXITED)
                continue
            since = source.silent_since
            expiry = self.expiry_ns
            expired = since is not None and expiry is not None and now_ns >= since + expiry
            if source.silent and expired:
                self._abandon_source(src, source, AbandonReason.EXPIRED, remember=False)

    def unobserved(self) -> Counter[tuple[str, str]]:
        """Running producers whose shim passes through, by (source label, reason)."""
        return Counter(
            (source.label, unobserved_reason(source.unobserved))
            for source in self._sources.values()
            if source.unobserved is not None
        )

    def families(self) -> Iterator[Metric]:
        """The decoder's own metrics: producers that observe nothing, and processes gone."""
        unobserved = GaugeMetricFamily(
            "lwsobs_lws_sources_unobserved",
            "running lws producers whose shim passes through (e.g. an lws version it does not"
            " know), by reason",
            labels=("source", "reason"),
        )
        for (label, reason), n in sorted(self.unobserved().items()):
            unobserved.add_metric([label, reason], n)
        yield unobserved
        gone = CounterMetricFamily(
            "lwsobs_lws_processes_gone",
            "lws producer processes whose end lwsobs inferred, by how (their wsis: abandoned)",
            labels=("reason",),
        )
        for reason in AbandonReason:
            gone.add_metric([reason.value], self.stats[f"sources_{reason.value}"])
        yield gone

    # -- sources and contexts ----------------------------------------------------------------

    def _source(self, src: str) -> _SourceState:
        """The state of `src`, created if new; either way it is now the most recently heard."""
        source = self._sources.get(src)
        if source is None:
            return self._new_source(src)
        if source is not self._recent:  # a run of events from one source moves nothing
            source.silent = False
            self._recent = source
            self._heard.move_to_end(src)
            if not source.contexts:
                self._idle.move_to_end(src)
        return source

    def _new_source(self, src: str) -> _SourceState:
        while len(self._sources) >= self.max_sources:
            self._make_room()
        source = self._recent = self._sources[src] = _SourceState(source_label(src))
        self._heard[src] = None
        self._idle[src] = None
        return source

    def _make_room(self) -> None:
        """Forget one source: the least recently heard without contexts, else the least
        recently heard of all, whose live wsis become suspects (it may simply be quiet)."""
        if self._idle:
            src = next(iter(self._idle))
            self._forget(src)
            self.stats["sources_forgotten"] += 1
            return
        src = next(iter(self._heard))
        self._give_up(src, self._sources[src])
        self.stats["sources_evicted"] += 1

    def _give_up(self, src: str, source: _SourceState) -> None:
        """Drop `src` while it still has contexts: its live wsis are flagged source_lost (a
        suspect, as for silence), then its contexts end without a certain finding."""
        for key in list(source.contexts):
            ctx = source.contexts[key].ctx
            live = sorted((w for wsis in ctx.live.values() for w in wsis), key=_serial)
            # the last thing known of the source: no other clock says when it went away
            now = max((w.last_ns for w in live), default=source.contexts[key].first_t)
            for wsi in live:
                self.tracker.flag(wsi, now, LeakRule.SOURCE_LOST)
            self._end_context(src, source, key, now, counted=False)
        self._forget(src)

    def _abandon_source(
        self, src: str, source: _SourceState, reason: AbandonReason, *, remember: bool = True
    ) -> None:
        """The process behind `src` is gone: its wsis are abandoned, not leaked, at its last
        line, and its contexts end. `remember`: its late lines will be ignored (it is known
        to be gone, not merely quiet)."""
        now = source.latest()
        for key in list(source.contexts):
            state = source.contexts.pop(key)
            self.tracker.context_abandoned(state.ctx, now, reason)
        self._forget(src)
        self.stats[f"sources_{reason.value}"] += 1
        if remember:
            self._ended[src] = None
            if len(self._ended) > _ENDED_MEMORY:
                self._ended.popitem(last=False)

    def _previous_runs_gone(self, hello: Event) -> None:
        """A new run of a program (the shim names each process `name@host:pid`): an older run
        of it on the same host that is gone (its pid has left, it went silent, or it sent
        nothing for three heartbeats before this HELLO) is over, and its wsis are abandoned.
        One still running is another instance: both are kept, apart."""
        if hello.host is None:
            return
        for src in list(self._runs.get((source_label(hello.src), hello.host), ())):
            old = self._sources[src]
            alive = None if self.processes is None else self.processes.alive(old.host, old.pid)
            quiet = hello.t - old.latest() > _QUIET_HEARTBEATS * old.heartbeat_ns
            if alive is False or (alive is None and (old.silent or quiet)):
                self._abandon_source(src, old, AbandonReason.EXITED)
                self.stats["previous_runs_ended"] += 1

    def _forget(self, src: str) -> None:
        self._recent_context = None
        source = self._sources.pop(src, None)
        if source is not None and source.host is not None:
            runs = self._runs[(source.label, source.host)]
            del runs[src]
            if not runs:
                del self._runs[(source.label, source.host)]
        self._heard.pop(src, None)
        self._idle.pop(src, None)

    def _context(self, event: Event) -> _ContextState:
        source = self._source(event.src)
        key = event.ctx or "0"
        state = source.contexts.get(key)
        if state is None:
            ctx = self.tracker.context(source.label, f"{event.src}/{key}")
            if source.uncertain:
                ctx.uncertain = True  # lines of this source were lost: maybe some of this one
            if not source.contexts:
                self._idle.pop(event.src, None)
            state = source.contexts[key] = _ContextState(ctx, event.t)
        return state

    def _end_contexts(self, src: str, now: int) -> None:
        """Every context of `src` is gone: what is still live never got its WSI_DESTROY."""
        source = self._sources.get(src)
        if source is None:
            return
        for key in list(source.contexts):
            self._end_context(src, source, key, now)

    def _end_context(
        self, src: str, source: _SourceState, key: str, now: int, *, counted: bool = True
    ) -> None:
        state = source.contexts.pop(key, None)
        if state is None:
            return
        self._recent_context = None
        if not source.contexts:
            self._idle[src] = None
        if source.uncertain:
            for known in state.wsis.values():
                if known.wsi is not None and known.wsi.live:
                    self.tracker.mark_uncertain(known.wsi)  # a suspect from before the loss too
        self.tracker.context_destroyed(state.ctx, now, graceful=False)
        if not counted:  # given up, not ended: what it left is not known to have failed
            return
        self.stats["unclassified_at_teardown"] += sum(
            1 for known in state.wsis.values() if known.wsi is None and known.created
        )
        # a lone 85 nobody reused: the last synchronous DNS failure of the context (lws 4.1)
        self.stats["client_connect_failed_silently"] += sum(
            1
            for known in state.wsis.values()
            if known.client and known.wsi is None and not known.created
        )

    def _pseudo(self, event: Event) -> None:
        r = event.r
        if r == PseudoEvent.HELLO:
            self._hello(event)
            return
        if event.src in self._ended:
            self.stats["lines_after_exit"] += 1
            return
        if r == PseudoEvent.LISTEN:
            self._listen(self._context(event), event)
        elif r == PseudoEvent.HTTP_STATUS:
            self._http_status(self._context(event), event)
        elif r == PseudoEvent.FATAL:
            source = self._source(event.src)
            source.last_t = max(source.last_t, event.t)
            log.warning(
                "lws source %s died from signal %s: its wsis are abandoned (crashed)",
                event.src,
                event.sig,
            )
            self._abandon_source(event.src, source, AbandonReason.CRASHED)
        elif r == PseudoEvent.CONTEXT_DESTROY_BEGIN:
            self.tracker.context_closing(self._context(event).ctx)
        elif r == PseudoEvent.CONTEXT_DESTROYED:
            source = self._source(event.src)
            self._end_context(event.src, source, event.ctx or "0", event.t)
        elif r == PseudoEvent.BYE:
            self._end_contexts(event.src, event.t)
            self._forget(event.src)
        elif event.src in self._sources:  # a heartbeat (or another pseudo-event): it is alive
            source = self._source(event.src)
            source.last_t = max(source.last_t, event.t)

    def _hello(self, event: Event) -> None:
        """A producer starts. The same src again is the same pid on the same host: the process
        that had it is gone. Then the previous runs of the program are looked at."""
        self._ended.pop(event.src, None)
        old = self._sources.get(event.src)
        if old is not None:
            self._abandon_source(event.src, old, AbandonReason.EXITED, remember=False)
        self._previous_runs_gone(event)
        source = self._source(event.src)
        if source.host is None and event.host is not None:
            source.host = event.host
            self._runs.setdefault((source.label, event.host), {})[event.src] = None
        source.pid = event.pid
        source.last_t = event.t
        if event.hb is not None and event.hb > 0:
            source.heartbeat_ns = event.hb * 1_000_000
        if event.unobserved:
            source.unobserved = event.unobserved
            self.stats["sources_unobserved"] += 1
            log.warning(
                "lws source %s (lws %s) is unobserved: %s", event.src, event.lws, event.unobserved
            )

    def _listen(self, state: _ContextState, event: Event) -> None:
        """LISTEN: a vhost listens; its listen wsis are live from now, pointers unknown yet.

        lws 4.3+ says how many sockets it opened (`n`); 4.1 does not, and a vhost that shares
        an earlier vhost's port announces it again: one per port then.
        """
        count = event.n
        if count is None:
            known = [w.port for w in state.listening] + [
                w.port for w in state.wsis.values() if w.wsi is not None and w.port is not None
            ]
            count = 0 if event.port in known else 1
        for _ in range(max(0, min(count, 64))):
            placeholder = _WsiState(event.t, created=True, port=event.port, vh=event.vh)
            self._open(state, placeholder, Role.LISTEN, event)
            state.listening.append(placeholder)

    def _claim_listen(self, state: _ContextState, event: Event) -> _WsiState | None:
        """The announced listen wsi that `event` (a 17 or a bare 30) belongs to, if any: the
        same vhost and port first, then the same port, then the same vhost."""
        listening = state.listening
        if not listening:
            return None
        best, score = -1, 0
        for i, candidate in enumerate(listening):
            points = 2 * (event.port is not None and candidate.port == event.port) + (
                event.vh is not None and candidate.vh == event.vh
            )
            if points > score:
                best, score = i, points
        if best < 0:
            if event.port is not None or event.vh is not None:
                return None  # it names a socket no LISTEN announced
            best = 0
        known = listening.pop(best)
        state.wsis[event.wsi or ""] = known
        if known.wsi is not None:
            self.tracker.annotate(known.wsi, "lws.wsi.ptr", event.wsi or "")
        return known

    def _http_status(self, state: _ContextState, event: Event) -> None:
        """HTTP_STATUS: the response status of the open transaction, or, with none open, a
        request lws answered itself (refused: a transaction of its own)."""
        known = state.wsis.get(event.wsi or "")
        if known is None or known.wsi is None or event.status is None:
            self.stats["status_unmatched"] += 1
            return
        wsi = known.wsi
        if wsi.txn is not None:
            known.status = event.status
        elif (
            not known.client
            and wsi.live
            and self.tracker.refused(wsi, event.t, event.status) is not None
        ):
            self.stats["transactions_refused"] += 1

    # -- wsi bookkeeping ---------------------------------------------------------------------

    def _open(
        self,
        state: _ContextState,
        known: _WsiState,
        role: Role,
        event: Event,
        *,
        peer: str | None = None,
        parent: Wsi | None = None,
    ) -> Wsi:
        attrs: dict[str, object] = {"lws.wsi.ptr": event.wsi or ""}  # for gdb and lws logs
        if event.src:
            attrs["lws.src"] = event.src
        if event.vh:
            attrs["lws.vhost"] = event.vh
        if event.pcol:
            attrs["lws.protocol"] = event.pcol
        if event.ssl is not None:
            attrs["lws.ssl"] = event.ssl
        if event.tag:
            attrs["lws.tag"] = event.tag
        if known.addr:  # a client's target, from its connect call
            attrs["server.address"] = known.addr
        if known.port is not None and known.port > 0:
            attrs["server.port"] = known.port
        wsi = self.tracker.open(
            state.ctx, role, known.created_t, peer=peer, parent=parent, attrs=attrs
        )
        known.wsi = wsi
        return wsi

    def _live(self, state: _ContextState, event: Event) -> Wsi | None:
        known = state.wsis.get(event.wsi or "")
        return None if known is None else known.wsi

    # -- handlers, one per callback reason ---------------------------------------------------

    def _filter_network(self, state: _ContextState, event: Event) -> None:
        """17: the listen wsi announces an accepted fd; the next WSI_CREATE is that connection."""
        listen = state.wsis.get(event.wsi or "")
        if listen is None:
            listen = self._claim_listen(state, event)
        if listen is None:
            listen = state.wsis[event.wsi or ""] = _WsiState(event.t, created=True)
            listen.port = event.port
            self._open(state, listen, Role.LISTEN, event)
        state.accept_peer = normalise_peer(event.peer)
        state.accept_fd = event.afd
        state.accept_pending = True

    def _wsi_create(self, state: _ContextState, event: Event) -> None:
        ptr = event.wsi or ""
        known = state.wsis.get(ptr)
        # An accepted wsi's create has no fd yet (-1; 19 brings it); a client's create has its
        # socket. So a 17 that lws rejected (no create of its own) cannot make the next client
        # create look like an accept.
        accept = state.accept_pending and event.fd in (None, -1)
        state.accept_pending = False
        if known is not None and known.client and known.wsi is None and (accept or event.fd == -1):
            # A lone 85 whose pointer an accepted connection or a stream (no fd: not a client
            # that connected) took: lws 4.1's synchronous DNS failure.
            self.stats["client_connect_failed_silently"] += 1
            known = None
        if (
            known is not None
            and known.client
            and (known.wsi is None or known.wsi.live)
            and not accept  # an accepted connection took the pointer: the client's 30 was lost
        ):
            if known.created and not known.redirecting:
                self.stats["client_recreated"] += 1
            known.created = True  # connected (or reconnected after a redirect): same wsi
            known.redirecting = False
            if known.wsi is None:
                self._open(state, known, Role.H1_CLIENT, event)
            return
        if known is not None and known.wsi is not None and known.wsi.live:
            self.tracker.flag(known.wsi, event.t, LeakRule.IDENTITY_REUSED)
        known = state.wsis[ptr] = _WsiState(event.t, created=True)
        if accept:
            known.afd = state.accept_fd
            self._open(state, known, Role.H1_SERVER, event, peer=state.accept_peer)

    def _client_first(self, state: _ContextState, event: Event) -> None:
        """85 / 105: a client connection attempt; 105 means the connect call survived."""
        ptr = event.wsi or ""
        known = state.wsis.get(ptr)
        if known is not None:
            if known.client and known.redirecting:
                return  # rebinding after a redirect: the same logical wsi
            wsi = known.wsi
            if wsi is None:
                if known.client and event.r == R.CLIENT_HTTP_BIND_PROTOCOL:
                    # a lone 85 whose pointer came back: lws 4.1's synchronous DNS failure
                    self.stats["client_connect_failed_silently"] += 1
                    known = None
            elif not wsi.live:
                known = None
            elif event.r == R.CLIENT_HTTP_BIND_PROTOCOL:
                self.tracker.flag(wsi, event.t, LeakRule.IDENTITY_REUSED)
                known = None
        if known is None:
            known = state.wsis[ptr] = _WsiState(event.t, client=True)
        if event.addr is not None or event.uri is not None:  # the connect call's request
            known.method, known.uri = event.method, event.uri
            known.addr, known.port = event.addr, event.port
        if event.r == R.CONNECTING and known.wsi is None:
            self._open(state, known, Role.H1_CLIENT, event, peer=normalise_peer(event.peer))

    def _new_client_instantiated(self, state: _ContextState, event: Event) -> None:
        """19: a server wsi adopted (peer confirmation) or a client that survived connect.

        For an accepted server wsi, 19 carries the fd its 17 announced: the two name the same
        connection, and their peers must agree once normalised (counted when they do not).
        """
        known = state.wsis.get(event.wsi or "")
        if known is None:
            known = state.wsis[event.wsi or ""] = _WsiState(event.t, client=True)
        if known.wsi is None and known.client:
            self._open(state, known, Role.H1_CLIENT, event, peer=normalise_peer(event.peer))
        elif known.afd is not None and known.afd == event.fd and known.wsi is not None:
            peer = known.wsi.peer
            seen = _address(normalise_peer(event.peer))
            if seen is not None and isinstance(peer, str) and _address(peer) != seen:
                self.stats["peer_mismatch"] += 1

    def _connection_error(self, state: _ContextState, event: Event) -> None:
        known = state.wsis.get(event.wsi or "")
        if known is None:
            known = state.wsis[event.wsi or ""] = _WsiState(event.t, client=True)
        wsi = known.wsi or self._open(state, known, Role.H1_CLIENT, event)
        self.tracker.touch(wsi, event.t)
        self.stats["client_connection_errors"] += 1

    def _transaction_start(self, state: _ContextState, event: Event) -> None:
        """18 (and 86 for an upgrade request): a server transaction begins."""
        known = state.wsis.get(event.wsi or "")
        if known is None:
            known = state.wsis[event.wsi or ""] = _WsiState(event.t)
        if known.wsi is None:
            parent = None
            if event.nwsi and event.nwsi != event.wsi:
                network = state.wsis.get(event.nwsi)
                parent = network.wsi if network is not None else None
                if parent is not None and parent.role is Role.H1_SERVER:
                    self.tracker.upgrade(parent, Role.H2_SERVER, event.t)
                self._open(state, known, Role.H2_STREAM, event, parent=parent)
            else:
                self._open(state, known, Role.H1_SERVER, event)
        wsi = known.wsi
        assert wsi is not None
        known.status = None
        # on 86 `uri` is the upgrade request's path (shims before 0.3 sent none)
        if self.tracker.bind(wsi, event.t, None, event.method, event.uri) is not None:
            parent = wsi.parent
            if parent is not None:
                self.tracker.carried(parent)

    def _drop(self, state: _ContextState, event: Event) -> None:
        """50: only the keep-alive turnaround ends a transaction; the closing DROP may not come."""
        known = state.wsis.get(event.wsi or "")
        if known is not None and known.wsi is not None and event.why == _TXN_COMPLETED:
            self.tracker.drop(known.wsi, event.t, known.status)

    def _transaction_end(self, state: _ContextState, event: Event) -> None:
        """15 HTTP_FILE_COMPLETION, 5 CLOSED_HTTP: the transaction (if any) is over."""
        known = state.wsis.get(event.wsi or "")
        if known is not None and known.wsi is not None:
            self.tracker.drop(known.wsi, event.t, known.status)

    def _upgrade_confirm(self, state: _ContextState, event: Event) -> None:
        """86: an upgrade request (websocket or h2c) is a transaction of its own."""
        self._transaction_start(state, event)
        known = state.wsis[event.wsi or ""]
        if event.upg == "h2c" and known.wsi is not None:
            self.tracker.upgrade(known.wsi, Role.H2_SERVER, event.t)

    def _established(self, state: _ContextState, event: Event) -> None:
        """0: the websocket handshake completed on a server wsi."""
        wsi = self._live(state, event)
        if wsi is not None:
            self.tracker.upgrade(wsi, Role.WS_SERVER, event.t)

    def _client_established(self, state: _ContextState, event: Event) -> None:
        """3: a websocket client connection is up."""
        wsi = self._live(state, event)
        if wsi is not None:
            self.tracker.upgrade(wsi, Role.WS_CLIENT, event.t, status=101)

    def _client_handshake(self, state: _ContextState, event: Event) -> None:
        """24: the client writes its request: its transaction starts (once per attempt).

        On an h2 client the request rides a new stream wsi (its network wsi differs): the
        stream is opened as a child of the network wsi, which becomes h2-client.
        """
        known = state.wsis.get(event.wsi or "")
        if known is None:
            known = state.wsis[event.wsi or ""] = _WsiState(event.t)
        if not known.client and known.wsi is None and event.nwsi and event.nwsi != event.wsi:
            network = state.wsis.get(event.nwsi)
            parent = network.wsi if network is not None else None
            if parent is not None and parent.role is Role.H1_CLIENT:
                self.tracker.upgrade(parent, Role.H2_CLIENT, event.t)
            known.client = True
            self._open(state, known, Role.H2_STREAM, event, parent=parent)
        if not known.client:
            return
        wsi = known.wsi or self._open(state, known, Role.H1_CLIENT, event)
        if wsi.txn is None:
            method, uri = event.method or known.method, event.uri or known.uri
            if self.tracker.bind(wsi, event.t, None, method, uri) is not None:
                parent = wsi.parent
                if parent is not None:
                    self.tracker.carried(parent)

    def _client_status(self, state: _ContextState, event: Event) -> None:
        """44: the response status of a client transaction."""
        known = state.wsis.get(event.wsi or "")
        if known is not None:
            known.status = event.status

    def _client_done(self, state: _ContextState, event: Event) -> None:
        """47 / 45 / 75: a client transaction ends (completed or closed)."""
        known = state.wsis.get(event.wsi or "")
        if known is not None and known.wsi is not None:
            self.tracker.drop(known.wsi, event.t, known.status)

    def _client_drop(self, state: _ContextState, event: Event) -> None:
        """76: only the reset before a redirect's reconnect matters: the wsi will reconnect."""
        known = state.wsis.get(event.wsi or "")
        if known is not None and event.why in _CLIENT_RESET:
            known.redirecting = True
            if known.wsi is not None:
                self.tracker.drop(known.wsi, event.t, known.status)

    def _redirect(self, state: _ContextState, event: Event) -> None:
        """104: a 3xx with Location; lws reconnects the same wsi, the response ends this try.

        ESTABLISHED_CLIENT_HTTP never came for it (lws handles the redirect first), so the
        transaction ends without a status; the request on the new connection is a new one.
        """
        known = state.wsis.get(event.wsi or "")
        if known is not None:
            known.redirecting = True
            if known.wsi is not None:
                self.tracker.drop(known.wsi, event.t, event.status or known.status)
            if event.uri:  # the Location: the next request's target
                known.uri = _location_path(event.uri)

    def _raw(self, state: _ContextState, event: Event) -> None:
        """62 / 63 / 101: an adopted or connected raw socket or file."""
        known = state.wsis.get(event.wsi or "")
        if known is None:
            known = state.wsis[event.wsi or ""] = _WsiState(event.t)
        if known.wsi is None:
            self._open(state, known, Role.RAW, event)

    def _wsi_destroy(self, state: _ContextState, event: Event) -> None:
        """30: the wsi is freed (an unknown pointer is a listen wsi that accepted nothing)."""
        known = state.wsis.pop(event.wsi or "", None)
        if known is None:
            known = self._bare_destroy(state, event)
        if known.wsi is None:
            if not known.created and known.client:
                # a client that failed before connecting: show it, it did exist
                self._open(state, known, Role.H1_CLIENT, event)
            else:
                self._open(state, known, Role.INTERNAL, event)
        assert known.wsi is not None
        self.tracker.destroy(known.wsi, event.t)

    def _bare_destroy(self, state: _ContextState, event: Event) -> _WsiState:
        """30 for a pointer never seen: what its tag says it is, else a listen wsi that
        accepted nothing (lws gives listen wsis no WSI_CREATE): the one LISTEN announced, or
        one that lived (at least) since its context's first event."""
        kind = tag_kind(event.tag)
        if kind is None or kind is TagKind.LISTEN:
            claimed = self._claim_listen(state, event)
            if claimed is not None:
                state.wsis.pop(event.wsi or "", None)
                return claimed
        role = Role.LISTEN if kind is None else _TAG_ROLES[kind]
        known = _WsiState(state.first_t if role is Role.LISTEN else event.t, created=True)
        known.client = role is Role.H1_CLIENT
        self._open(state, known, role, event)
        self.stats[f"{role.value}_seen_at_destroy"] += 1
        return known


def _location_path(location: str) -> str:
    """The request target a redirect's Location leads to: an absolute URL's path."""
    scheme, sep, rest = location.partition("://")
    if sep and scheme.isalpha():
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return location


def _serial(wsi: Wsi) -> int:
    return wsi.serial


Handler = Callable[[LwsDecoder, _ContextState, Event], None]

_HANDLERS: dict[int, Handler] = {
    R.FILTER_NETWORK_CONNECTION: LwsDecoder._filter_network,
    R.WSI_CREATE: LwsDecoder._wsi_create,
    R.CLIENT_HTTP_BIND_PROTOCOL: LwsDecoder._client_first,
    R.CONNECTING: LwsDecoder._client_first,
    R.SERVER_NEW_CLIENT_INSTANTIATED: LwsDecoder._new_client_instantiated,
    R.CLIENT_CONNECTION_ERROR: LwsDecoder._connection_error,
    R.FILTER_HTTP_CONNECTION: LwsDecoder._transaction_start,
    R.HTTP_DROP_PROTOCOL: LwsDecoder._drop,
    R.HTTP_FILE_COMPLETION: LwsDecoder._transaction_end,
    R.CLOSED_HTTP: LwsDecoder._transaction_end,
    R.HTTP_CONFIRM_UPGRADE: LwsDecoder._upgrade_confirm,
    R.ESTABLISHED: LwsDecoder._established,
    R.CLIENT_ESTABLISHED: LwsDecoder._client_established,
    R.CLIENT_APPEND_HANDSHAKE_HEADER: LwsDecoder._client_handshake,
    R.ESTABLISHED_CLIENT_HTTP: LwsDecoder._client_status,
    R.COMPLETED_CLIENT_HTTP: LwsDecoder._client_done,
    R.CLOSED_CLIENT_HTTP: LwsDecoder._client_done,
    R.CLIENT_CLOSED: LwsDecoder._client_done,
    R.CLIENT_HTTP_DROP_PROTOCOL: LwsDecoder._client_drop,
    R.CLIENT_HTTP_REDIRECT: LwsDecoder._redirect,
    R.RAW_ADOPT: LwsDecoder._raw,
    R.RAW_ADOPT_FILE: LwsDecoder._raw,
    R.RAW_CONNECTED: LwsDecoder._raw,
    R.WSI_DESTROY: LwsDecoder._wsi_destroy,
}
