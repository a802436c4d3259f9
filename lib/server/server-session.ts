/**
 * One client's logical session on the server: a random id bound to a principal. It takes the
 * streams the client opens (channels, byte streams, resumptions, TCP tunnels), keeps the
 * client's exports until a value names them and its own until the client opens them, and lives
 * on for its lease when the connection under it is lost.
 */
import { debug } from '../core/debug.js';
import { publish } from '../core/diagnostics.js';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import type { ReferenceKind } from '../wire/codec.js';
import { FrameType } from '../wire/frames.js';
import { Headers, header, type HeaderMap } from '../wire/headers.js';
import type { ServerWireStream } from '../transport/contract.js';
import type { ServerConnection } from '../transport/connections.js';
import { ChannelExporter, RemoteChannel, sendWindow, type ExportableChannel, type RemoteEndpoint } from '../session/channel-stream.js';
import { CollectionTrigger } from '../session/collector.js';
import { OwnerPair } from '../session/pair-stream.js';
import { ControlStream } from '../session/control.js';
import { refuse } from '../session/refusal.js';
import { SessionCore, joinBytes, newSessionId, type BytesMode, type ExportPlan, type ParsedReference } from '../session/session.js';
import type { Stats } from '../session/stream-context.js';
import type { Limits, ServerOptions, Timeouts } from './options.js';
import { ClientExports, ServerExports } from './exports.js';
import type { TunnelService } from './tunnels.js';

/** What a session needs of its server. */
export interface SessionHost {
  readonly statsRef: Stats;
  readonly limits: Limits;
  readonly timeouts: Timeouts;
  readonly pendingReferenceTimeoutMs: number;
  /** The server's handler of `tcp` streams, when it is a gateway. */
  readonly tunnels: TunnelService | null;
  /** The channel exported under `name`, if any. */
  lookup(name: string, session: ServerSession): ExportableChannel | undefined;
  /** Whether `principal` may use the exported channel `channel`. */
  allows(principal: string, channel: string): boolean;
  /** The session ended: it is no longer found by id. */
  forgetSession(session: ServerSession): void;
}

export class ServerSession extends SessionCore<ServerWireStream> {
  protected readonly side = 'server';
  private nextRef = 1;
  /** References this side sent whose streams the client has not opened yet. */
  private readonly pendingExports: ServerExports;
  /** Channels and byte streams the client exported whose reference has not been decoded yet. */
  private readonly unclaimed: ClientExports;
  /** Stream ids of this session's streams open now (docs/PROTOCOL.md §4: unique in the session). */
  private readonly openSids = new Set<string>();
  /** The stream id each arriving stream names, until it is tracked. */
  private readonly sidOf = new WeakMap<ServerWireStream, string>();
  /** What a tracked stream must let go of when it closes. */
  private readonly closing = new WeakMap<ServerWireStream, { connection: ServerConnection | undefined; sid: string | undefined }>();
  private control: ControlStream | null = null;
  private leaseTimer: NodeJS.Timeout | null = null;
  /** The connection that carries the control stream now. */
  private connection: ServerConnection | undefined;
  private controlStream: ServerWireStream | null = null;
  /** Anonymous, and nothing but the control stream open: counted on the connection, timed. */
  private unused = false;
  private unusedTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly server: SessionHost,
    readonly principal: string,
    options: ServerOptions,
    /** The lease agreed with the client (0: not resumable). */
    readonly leaseMs = 0,
  ) {
    super(newSessionId(), server.statsRef, options);
    this.resumable = leaseMs > 0;
    // no more streams than the session may have open can ever arrive for its values
    this.maxWaitingReferences = server.limits.maxChannelsPerSession + server.limits.maxByteStreamsPerSession;
    this.collection = new CollectionTrigger(server.limits.maxChannelsPerSession);
    this.unclaimed = new ClientExports(this.id, this.referenceTimeoutMs);
    this.pendingExports = new ServerExports(this.id, server.pendingReferenceTimeoutMs, this.counters);
  }

  /** True while the session waits for its client to resume it. */
  get detached(): boolean {
    return this.leaseTimer !== null;
  }

  /** Binds the control stream: heartbeats arrive here; its end is the session's end. */
  attachControl(stream: ServerWireStream, idleTimeoutMs: number): void {
    this.control?.stop();
    this.controlStream = stream;
    this.setUnused(false);
    this.connection = stream.peer.connection;
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = null;
    // a client that asked for them (a page, whose timers a browser throttles) gets the server's
    // PINGs at each check for silence: its PONGs, written from a network event, keep it alive
    const pings = header(stream.headers, Headers.serverPing) === '1';
    this.track(stream);
    const control: ControlStream = new ControlStream(
      this.framed(stream),
      { idleTimeoutMs, peer: 'client', pings },
      {
        ended: () => {
          if (current()) this.end(netchanError(ErrorCodes.SESSION_CLOSED, 'client closed the session'), true);
        },
        failed: (err) => {
          if (!current()) return;
          if (this.resumable && err.code === ErrorCodes.CONNECTION_LOST) this.detach();
          else this.end(err);
        },
        closed: () => {
          if (current() && !this.detached) this.end(netchanError(ErrorCodes.SESSION_CLOSED, 'control stream closed'));
        },
        idle: (err) => this.end(err),
        violation: (err) => this.violated(err, 'control'),
      },
    );
    const current = (): boolean => this.control === control;
    this.control = control;
    // Data right behind the answer: some proxies (nginx 1.22 with grpc_pass) hold a response's
    // HEADERS until DATA follows, and the client waits for them (docs/PROTOCOL.md §4.1).
    control.ping();
  }

  /**
   * The connection is gone: keep the session for its lease. Channel streams cut off with it are
   * suspended (they keep their state and unconfirmed frames); byte streams are lost.
   */
  private detach(): void {
    if (this.ended || this.leaseTimer) return;
    debug('session %s detached; lease %d ms', this.id, this.leaseMs);
    this.control?.stop();
    this.control = null;
    this.controlStream = null;
    this.setUnused(false);
    this.leaseTimer = setTimeout(() => {
      this.leaseTimer = null;
      this.end(netchanError(ErrorCodes.CONNECTION_LOST, `session not resumed within its lease of ${this.leaseMs} ms`));
    }, this.leaseMs);
    this.leaseTimer.unref();
  }

  /** The client resumes this session on a new connection (a session stream naming it). */
  resumeControl(stream: ServerWireStream, idleTimeoutMs: number, responseHeaders: Record<string, string>): void {
    const old = this.control;
    if (old) {
      // the client saw the old connection die before we did
      this.control = null;
      old.destroy();
    }
    stream.respond(200, responseHeaders);
    this.attachControl(stream, idleTimeoutMs);
    debug('session %s resumed', this.id);
    publish('sessionResume', () => ({ side: 'server', sessionId: this.id, principal: this.principal, transport: stream.peer.transport, resumable: true }));
  }

  /** A channel stream of this session continues on a new connection (netchan-kind: resume). */
  private handleResume(stream: ServerWireStream, sid: string): void {
    const peerIn = Number(header(stream.headers, Headers.framesReceived));
    const fs = this.framedBySid.get(sid);
    if (!Number.isSafeInteger(peerIn) || peerIn < 0) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'bad netchan-frames-received');
    if (!fs || !fs.suspendNow()) return refuse(stream, 404, ErrorCodes.UNKNOWN_REFERENCE, `no channel stream ${sid} to resume in this session`);
    // for a channel this side owns, the answer to the opening too (the first may have been lost)
    const ex = this.exporters.get(sid);
    const opening = ex instanceof OwnerPair ? ex.answerHeaders : ex ? { [Headers.capacity]: String(ex.channel.capacity), [Headers.credit]: String(ex.sendCredits) } : {};
    stream.respond(200, { [Headers.framesReceived]: String(fs.framesIn), ...opening });
    this.track(stream);
    try {
      fs.resume(stream, peerIn);
      // a frame even when there is nothing to replay, so that a proxy passes the answer on (§4.5)
      fs.countFrame(ex ? FrameType.ACK : FrameType.CREDIT, 0);
    } catch (err) {
      fs.abandon(err as NetchanError);
      stream.reset('protocol');
    }
  }

  /** Ends the session: every stream of it goes. */
  end(error: NetchanError, graceful = false): void {
    if (this.ended) return;
    debug('session %s ends: %s', this.id, error.message);
    this.setUnused(false);
    this.control?.stop();
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = null;
    this.pendingExports.clear();
    this.unclaimed.clear();
    if (graceful) this.teardown(error, true);
    this.control?.end();
    this.teardown(error);
    this.server.forgetSession(this);
    publish('sessionClose', () => ({ side: 'server', sessionId: this.id, code: error.code, message: error.message }));
  }

  /** A stream of this session counts on its connection too: a connection with a live stream stays open. */
  protected override tracked(stream: ServerWireStream): void {
    const connection = stream.peer.connection;
    connection?.streamOpened();
    const sid = this.sidOf.get(stream);
    if (sid !== undefined) this.openSids.add(sid);
    // a closed HTTP/2 stream has let go of its session: remember the connection for untracked()
    this.closing.set(stream, { connection, sid });
    this.watchUse();
  }

  protected override untracked(stream: ServerWireStream): void {
    const { connection, sid } = this.closing.get(stream) ?? {};
    connection?.streamClosed();
    if (sid !== undefined) this.openSids.delete(sid);
    this.watchUse();
  }

  /**
   * An anonymous session with nothing but its control stream open is unused: bounded per
   * connection (`maxUnusedAnonymousSessionsPerConnection`) and ended after
   * `unusedAnonymousSessionTimeoutMs` (docs/PROTOCOL.md §4.3).
   */
  private watchUse(): void {
    if (this.principal !== '' || this.ended) return;
    const control = this.controlStream;
    const others = this.streams.size - (control && this.streams.has(control) ? 1 : 0);
    this.setUnused(control !== null && others === 0);
  }

  private setUnused(unused: boolean): void {
    if (unused === this.unused) return;
    this.unused = unused;
    if (this.connection) this.connection.unusedAnonymousSessions += unused ? 1 : -1;
    if (this.unusedTimer) clearTimeout(this.unusedTimer);
    this.unusedTimer = null;
    const ms = this.server.timeouts.unusedAnonymousSessionTimeoutMs;
    if (!unused || ms <= 0) return;
    this.unusedTimer = setTimeout(() => this.end(netchanError(ErrorCodes.TIMEOUT, `anonymous session with no stream open for ${ms} ms`)), ms);
    this.unusedTimer.unref();
  }

  /** A channel or byte stream stream of this session arrived. */
  handle(stream: ServerWireStream): void {
    const headers = stream.headers;
    const kind = header(headers, Headers.kind);
    const sid = header(headers, Headers.stream);
    if (!sid || sid.length > 64) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'missing or bad netchan-stream header');
    if (kind === 'resume') return this.handleResume(stream, sid);
    if (this.inUse(sid)) return refuse(stream, 400, ErrorCodes.PROTOCOL, `stream id ${sid} reused in this session`);
    // taken once the stream is accepted (tracked); a refused stream leaves its id free
    this.sidOf.set(stream, sid);
    if (kind === 'channel') return this.handleChannel(stream, headers, sid);
    if (kind === 'bytes') return this.handleBytes(stream, headers, sid);
    if (kind === 'tcp') return this.handleTcp(stream);
    refuse(stream, 400, ErrorCodes.PROTOCOL, `unknown netchan-kind ${String(kind)}`);
  }

  /**
   * Whether a stream id of this session is taken: its stream is open, its export waits for the
   * value that names it, or its channel stream is suspended for a resumption. Ids of streams long
   * gone are not remembered, so that a long session's memory does not grow with every stream.
   */
  private inUse(sid: string): boolean {
    return this.openSids.has(sid) || this.unclaimed.has(sid) || this.framedBySid.has(sid) || this.exporters.has(sid);
  }

  private handleChannel(stream: ServerWireStream, headers: HeaderMap, sid: string): void {
    if (this.exporters.size + this.remotes.size >= this.server.limits.maxChannelsPerSession) {
      return this.refuseLimit(stream, sid, `this session has ${this.server.limits.maxChannelsPerSession} channel streams open, the limit`);
    }
    const name = header(headers, Headers.name);
    const ref = header(headers, Headers.ref);
    const exported = header(headers, Headers.exportRef);
    if (exported !== undefined) {
      // the client owns this channel; we get a handle, claimed when a value names it
      if (exported !== sid) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'netchan-export must equal netchan-stream');
      if (header(headers, Headers.sendName) !== undefined) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'netchan-send-name goes with netchan-name only');
      const capacity = Number(header(headers, Headers.capacity) ?? 0);
      const credits = Number(header(headers, Headers.credit) ?? 1);
      if (!Number.isInteger(capacity) || capacity < 0 || !Number.isInteger(credits) || credits < 1 || credits > sendWindow(capacity)) {
        return refuse(stream, 400, ErrorCodes.PROTOCOL, 'bad netchan-capacity or netchan-credit');
      }
      stream.respond(200);
      this.track(stream);
      const rc = this.attachRemote(this.framed(stream), sid);
      rc.open({ capacity, credits });
      this.unclaimed.add(sid, 'channel', rc);
      this.announce(sid);
      return;
    }
    const sendName = header(headers, Headers.sendName);
    if (sendName !== undefined && (name === undefined || ref !== undefined)) {
      return refuse(stream, 400, ErrorCodes.PROTOCOL, 'netchan-send-name goes with netchan-name only');
    }
    let channel: ExportableChannel | undefined;
    if (name !== undefined) {
      channel = this.named(stream, name);
      if (!channel) return;
      if (sendName !== undefined) {
        const send = this.named(stream, sendName);
        if (send) this.acceptPair(stream, sid, channel, send);
        return;
      }
    } else if (ref !== undefined) {
      const p = this.pendingExports.take(ref, 'channel');
      if (!p) return refuse(stream, 404, ErrorCodes.UNKNOWN_REFERENCE, `no channel reference ${ref} in this session`);
      channel = p.obj as ExportableChannel;
    } else {
      return refuse(stream, 400, ErrorCodes.PROTOCOL, 'channel stream names no channel');
    }
    if (this.exporters.has(sid)) return refuse(stream, 400, ErrorCodes.PROTOCOL, `stream id ${sid} already in use`);
    stream.respond(200, {
      [Headers.capacity]: String(channel.capacity),
      [Headers.credit]: String(ChannelExporter.initialCredits(channel)),
    });
    this.track(stream);
    const fs = this.framed(stream);
    this.attachExporter(fs, channel, sid);
    // The client waits for this answer (capacity, credits) before it sends; an ACK of 0 puts
    // data right behind it for proxies that hold HEADERS until DATA follows (§5.2).
    fs.countFrame(FrameType.ACK, 0);
    // a value that sends this handle back ({b: sid}) may have arrived first, on another connection
    this.announce(sid);
  }

  /** The exported channel `name` if this principal may use it; else the stream is refused. */
  private named(stream: ServerWireStream, name: string): ExportableChannel | undefined {
    const channel = this.server.lookup(name, this);
    if (!channel) {
      refuse(stream, 404, ErrorCodes.UNKNOWN_CHANNEL, `no channel named ${JSON.stringify(name)}`);
      return undefined;
    }
    if (!this.server.allows(this.principal, name)) {
      refuse(stream, 403, ErrorCodes.UNAUTHORIZED, `principal may not use channel ${JSON.stringify(name)}`);
      return undefined;
    }
    return channel;
  }

  /** A pair stream (docs/PROTOCOL.md §5.5): the client receives from `receive` and sends into `send`. */
  private acceptPair(stream: ServerWireStream, sid: string, receive: ExportableChannel, send: ExportableChannel): void {
    if (this.exporters.has(sid)) return refuse(stream, 400, ErrorCodes.PROTOCOL, `stream id ${sid} already in use`);
    stream.respond(200, OwnerPair.answer(receive, send));
    this.track(stream);
    const fs = this.framed(stream);
    this.attachPair(fs, receive, send, sid);
    // data right behind the answer, as for any channel stream this side owns (§4.2)
    fs.countFrame(FrameType.ACK, 0);
    this.announce(sid);
  }

  private handleBytes(stream: ServerWireStream, headers: HeaderMap, sid: string): void {
    if (this.openByteStreams >= this.server.limits.maxByteStreamsPerSession) {
      return this.refuseLimit(stream, sid, `this session has ${this.server.limits.maxByteStreamsPerSession} byte streams open, the limit`);
    }
    const ref = header(headers, Headers.ref);
    const exported = header(headers, Headers.exportRef);
    if (exported !== undefined) {
      const mode = header(headers, Headers.mode);
      if (exported !== sid || (mode !== 'r' && mode !== 'w' && mode !== 'd')) {
        return refuse(stream, 400, ErrorCodes.PROTOCOL, 'bad byte-stream export headers');
      }
      // the client's Readable arrives as our request body; its Writable is fed by our response
      stream.respond(200);
      this.track(stream);
      this.trackBytes(stream, sid);
      const bytes = stream.bytes;
      // Nothing flows to a Readable, but the response (its end proof, then END_STREAM) ends only
      // after the request body: proxies (nginx grpc_pass, Caddy) stop forwarding a request body
      // once its response is complete.
      if (mode === 'r') bytes.once('end', () => bytes.end());
      if (mode === 'w') bytes.resume();
      // Node dumps a server stream's unread body once both sides have ended, unless it was
      // read from: a short upload can end before its value is decoded.
      else bytes.read(0);
      this.unclaimed.add(sid, 'bytes', bytes, mode, stream);
      this.announce(sid);
      return;
    }
    if (ref === undefined) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'byte stream names no reference');
    const p = this.pendingExports.take(ref, 'bytes');
    if (!p) return refuse(stream, 404, ErrorCodes.UNKNOWN_REFERENCE, `no byte-stream reference ${ref} in this session`);
    stream.respond(200);
    this.track(stream);
    this.trackBytes(stream, sid);
    joinBytes(p.obj, stream.bytes, p.mode as BytesMode, 'server');
  }

  /** A TCP connection through the gateway (docs/PROTOCOL.md §8, lib/gateway/gateway.ts). */
  private handleTcp(stream: ServerWireStream): void {
    const tunnels = this.server.tunnels;
    if (!tunnels) return refuse(stream, 403, ErrorCodes.FORBIDDEN_TARGET, 'this server is not a TCP gateway');
    this.track(stream);
    tunnels.handle(stream, { sessionId: this.id, principal: this.principal, nudge: () => this.control?.ping() });
  }

  /**
   * Refuses a stream over a limit (429, ERR_LIMIT). If it was an export, a value naming it fails
   * with the same error at once instead of waiting for a stream that will not come.
   */
  private refuseLimit(stream: ServerWireStream, sid: string, message: string): void {
    refuse(stream, 429, ErrorCodes.LIMIT, message);
    this.unclaimed.refuse(sid, message);
    this.announce(sid, true);
  }

  protected referencePresent(kind: ReferenceKind, ref: ParsedReference): boolean {
    // a handle of the client's on one of our channels: its stream may still be on its way
    if (ref.back !== undefined) return this.exporters.has(ref.back);
    if (ref.owner !== 'c') throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'a client cannot name a server-owned reference');
    return this.unclaimed.present(kind, ref.id, ref.mode);
  }

  protected exportChannel(ch: ExportableChannel): ExportPlan {
    const id = `s${this.nextRef++}`;
    return { ref: { o: 's', id }, open: () => this.pendingExports.add(id, 'channel', ch) };
  }

  protected exportBytes(obj: object, mode: BytesMode): ExportPlan {
    const id = `s${this.nextRef++}`;
    return { ref: { o: 's', id, m: mode }, open: () => this.pendingExports.add(id, 'bytes', obj, mode) };
  }

  protected importChannel(_owner: 'c' | 's', id: string): unknown {
    // the program's handle: the session keeps only the endpoint (see RemoteChannel)
    return new RemoteChannel(this.unclaimed.claim(id) as RemoteEndpoint);
  }

  protected importBytes(_owner: 'c' | 's', id: string): unknown {
    return this.unclaimed.claim(id);
  }
}
