/**
 * The client: a logical session over one connection (any transport of lib/transport/). The
 * client opens every stream: for a named channel, for each channel or byte stream it puts inside
 * a value (before the value goes out), and for each server-owned reference it receives.
 *
 * Over 400 lines because it is one class whose parts share its state: the streams it opens, the
 * answers it waits for, and their resumption on a new connection. What stands alone is beside
 * it: options.ts, connect.ts, session-request.ts, tunnel.ts, memory.ts.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { debug } from '../core/debug.js';
import { publish } from '../core/diagnostics.js';
import { ChannelExporter, RemoteChannel, sendWindow, type ExportableChannel, type RemoteChannelOptions, type RemoteEndpoint } from '../session/channel-stream.js';
import { ErrorCodes, NetchanError, netchanError } from '../core/errors.js';
import { ControlStream } from '../session/control.js';
import type { FramedStream } from '../session/framed-stream.js';
import { CollectionTrigger } from '../session/collector.js';
import type { ReferenceKind } from '../wire/codec.js';
import { Headers, PROTOCOL_VERSION, header, refusal } from '../wire/headers.js';
import { SessionCore, joinBytes, type BytesMode, type ExportPlan, type ParsedReference } from '../session/session.js';
import { emptyStats, type Stats } from '../session/stream-context.js';
import { refuseByteStream } from '../wire/byte-frames.js';
import type { ClientWireSession, ClientWireStream, TransportKind, WireResponse } from '../transport/contract.js';
import type { ConnectOptions, Reconnector, SessionEvents } from './options.js';
import { sessionRequest, sessionStreamHeaders } from './session-request.js';
import { dialTcp, forward, type DialTcpOptions, type ForwardOptions, type Forwarder, type TcpOpener } from './tunnel.js';

export type { ConnectOptions, Reconnector, SessionEvents } from './options.js';

/** Typed listeners of a session's events. */
export interface Session {
  on<E extends keyof SessionEvents>(event: E, listener: SessionEvents[E]): this;
  once<E extends keyof SessionEvents>(event: E, listener: SessionEvents[E]): this;
  off<E extends keyof SessionEvents>(event: E, listener: SessionEvents[E]): this;
  emit<E extends keyof SessionEvents>(event: E, ...args: Parameters<SessionEvents[E]>): boolean;
}

/**
 * A client session. Get one with {@link connect}. Events: `'disconnect'` (error) when the
 * connection is lost and a resumption starts, `'reconnect'` once the session is resumed,
 * `'close'` (error) when the session ends.
 */
export class Session extends SessionCore<ClientWireStream> {
  protected readonly side = 'client';
  private nextStream = 1;
  private control: ControlStream | null = null;
  private closing: Promise<void> | null = null;
  private reconnecting = false;
  /** How long the server keeps this session after a lost connection, in ms (0: no resumption). */
  readonly leaseMs: number;
  private heartbeatIntervalMs = 15_000;
  private idleTimeoutMs = 45_000;
  /** What its session streams carry besides auth and ids. */
  private readonly sessionHeaders: Record<string, string>;

  /** @internal */
  constructor(
    id: string,
    private wire: ClientWireSession,
    private readonly reconnector: Reconnector,
    private readonly extraHeaders: Record<string, string>,
    options: ConnectOptions,
    leaseMs: number,
  ) {
    super(id, emptyStats(), options);
    this.counters.sessions = 1;
    this.leaseMs = leaseMs;
    this.resumable = leaseMs > 0 && options.reconnect !== false;
    this.sessionHeaders = sessionStreamHeaders(options);
    this.bindTransport(wire);
  }

  /** Which transport carries this session now: `h2`, `ws` or `memory`. */
  get transport(): TransportKind {
    return this.wire.kind;
  }

  private bindTransport(wire: ClientWireSession): void {
    wire.onClose((error) => {
      if (this.wire === wire) this.lost(error);
    });
  }

  /** True while the connection is lost and the session is being resumed. */
  get disconnected(): boolean {
    return this.reconnecting;
  }

  /** @internal */
  attachControl(stream: ClientWireStream, heartbeatIntervalMs: number, idleTimeoutMs: number): void {
    this.heartbeatIntervalMs = heartbeatIntervalMs;
    this.idleTimeoutMs = idleTimeoutMs;
    this.track(stream);
    this.control?.stop();
    const control: ControlStream = new ControlStream(
      this.framed(stream),
      { idleTimeoutMs, pingIntervalMs: heartbeatIntervalMs, peer: 'server' },
      {
        ended: () => {
          if (current()) this.fail(netchanError(ErrorCodes.SESSION_CLOSED, 'server ended the session'));
        },
        failed: (err) => {
          if (current()) this.lost(err);
        },
        closed: () => {
          if (current()) this.fail(netchanError(ErrorCodes.SESSION_CLOSED, 'control stream closed'));
        },
        idle: (err) => this.lost(err),
        violation: (err) => this.violated(err, 'control'),
      },
    );
    const current = (): boolean => this.control === control && !this.reconnecting;
    this.control = control;
  }

  /** The connection is gone: resume the session on a new one if it can be, else end it. */
  private lost(error: NetchanError): void {
    if (this.ended || this.reconnecting) return;
    if (!this.resumable || this.closing) return this.fail(error);
    this.reconnecting = true;
    debug('session %s lost its connection (%s); resuming', this.id, error.message);
    this.control?.stop();
    this.control = null;
    // streams on the old connection are cut off now, whether or not it noticed yet
    for (const fs of this.framedBySid.values()) fs.suspendNow();
    this.wire.destroy();
    this.emit('disconnect', error);
    void this.resume(error);
  }

  private async resume(cause: NetchanError): Promise<void> {
    const deadline = Date.now() + this.leaseMs;
    let delayMs = 50;
    let last: unknown = cause;
    while (!this.ended) {
      try {
        const wire = await this.reconnector(this.transport);
        if (this.ended) {
          wire.destroy();
          return;
        }
        try {
          const { control } = await sessionRequest(wire, this.extraHeaders, { [Headers.session]: this.id, [Headers.resumable]: '1', ...this.sessionHeaders });
          this.wire = wire;
          this.bindTransport(wire);
          control.bytes.on('error', (err) => debug('control stream error: %s', err.message));
          this.reconnecting = false;
          this.attachControl(control, this.heartbeatIntervalMs, this.idleTimeoutMs);
        } catch (err) {
          wire.destroy();
          throw err;
        }
        for (const [sid, fs] of this.framedBySid) if (fs.suspended) this.resumeStream(sid, fs);
        debug('session %s resumed', this.id);
        publish('sessionResume', () => ({ side: 'client', sessionId: this.id, principal: undefined, transport: this.transport, resumable: true }));
        this.emit('reconnect');
        return;
      } catch (err) {
        last = err;
        // the server no longer has the session, or refuses us: no point in trying again
        if (err instanceof NetchanError && err.status !== undefined && err.status !== 426 && err.status < 500) {
          return this.fail(netchanError(err.code, `session could not be resumed: ${err.message}`, { cause: err }));
        }
      }
      if (Date.now() + delayMs > deadline) break;
      await new Promise((r) => setTimeout(r, delayMs));
      delayMs = Math.min(delayMs * 2, 2000);
    }
    if (!this.ended) {
      this.fail(netchanError(ErrorCodes.CONNECTION_LOST, `connection lost and not resumed within the lease of ${this.leaseMs} ms`, { cause: last }));
    }
  }

  /**
   * Continues one channel stream on the new connection (netchan-kind: resume). A stream the
   * server never got (its opening was lost with the connection) is opened again instead, and its
   * frames all written again.
   */
  private resumeStream(sid: string, fs: FramedStream): void {
    const stream = this.open({ [Headers.kind]: 'resume', [Headers.framesReceived]: String(fs.framesIn) }, sid);
    // An answer that arrives once this connection is lost too (or the session ended) is late:
    // the stream stays suspended for the next connection, and nothing can be opened on this one.
    const wire = this.wire;
    const late = (): boolean => this.ended || this.reconnecting || this.wire !== wire;
    stream.onResponse((response) => {
      if (late()) return;
      const { status, headers } = response;
      const pending = this.unanswered.get(sid);
      if (status === 404 && pending) {
        stream.reset();
        const again = this.open(pending.kindHeaders, sid);
        again.onResponse((r) => {
          if (late()) return;
          this.answered(sid, pending, r);
          if (r.status === 200) this.continueOn(again, fs, 0);
          else {
            again.reset();
            fs.abandon(refusal(r.status, r.headers));
          }
        });
        return;
      }
      if (status !== 200) {
        stream.reset();
        return fs.abandon(refusal(status, headers));
      }
      // the server got the opening but its answer was lost: this answer stands for it
      if (pending) this.answered(sid, pending, response);
      this.continueOn(stream, fs, Number(header(headers, Headers.framesReceived)));
    });
  }

  private continueOn(stream: ClientWireStream, fs: FramedStream, peerFramesIn: number): void {
    try {
      fs.resume(stream, peerFramesIn);
    } catch (err) {
      stream.reset();
      fs.abandon(err as NetchanError);
    }
  }

  protected override forgetFramed(streamId: string, fs: FramedStream): void {
    super.forgetFramed(streamId, fs);
    this.unanswered.delete(streamId);
  }

  /**
   * A handle on the server's channel `name`: the same interface as a local Channel, plus
   * `release()` and `Symbol.dispose` (`using`). Its stream (one of the server's
   * `maxChannelsPerSession`) is released by `release()`, by closing the channel, or once the
   * program drops the handle and it is garbage-collected. Errors (an unknown name) surface on its
   * operations. `options.prefetch` sets how many values it asks for ahead of its program's
   * receives ({@link RemoteChannelOptions}).
   */
  channel<T>(name: string, options?: RemoteChannelOptions): RemoteChannel<T> {
    if (this.ended) throw netchanError(ErrorCodes.SESSION_CLOSED, 'session is closed');
    const prefetch = options?.prefetch;
    if (prefetch !== undefined && (!Number.isInteger(prefetch) || prefetch < 0)) {
      throw netchanError(ErrorCodes.INVALID_ARGUMENT, `prefetch must be a non-negative integer, got ${String(prefetch)}`);
    }
    const sid = this.newStreamId();
    const kindHeaders = { [Headers.kind]: 'channel', [Headers.name]: name };
    const endpoint = this.remoteOn<T>(this.open(kindHeaders, sid), sid, kindHeaders);
    if (prefetch !== undefined) endpoint.setPrefetch(prefetch);
    return new RemoteChannel(endpoint);
  }

  /**
   * Handles on two of the server's channels over one stream (a pair stream, docs/PROTOCOL.md
   * §5.5): `receive` only receives from `receiveName`, `send` only sends into `sendName` (the
   * other operations reject with ERR_INVALID_ARGUMENT). Each closes its own channel; the stream,
   * one of the server's `maxChannelsPerSession`, is released once both handles are released or
   * dropped. What `dial` uses. @internal
   */
  pair<R, S = R>(receiveName: string, sendName: string): { receive: RemoteChannel<R>; send: RemoteChannel<S> } {
    if (this.ended) throw netchanError(ErrorCodes.SESSION_CLOSED, 'session is closed');
    const sid = this.newStreamId();
    const kindHeaders = { [Headers.kind]: 'channel', [Headers.name]: receiveName, [Headers.sendName]: sendName };
    const stream = this.open(kindHeaders, sid);
    const pair = this.attachRemotePair<R, S>(this.framed(stream), sid);
    this.awaitAnswer(stream, sid, kindHeaders, ({ status, headers }) => {
      if (status !== 200) return pair.failOpen(refusal(status, headers));
      const capacity = Number(header(headers, Headers.capacity));
      const sendCapacity = Number(header(headers, Headers.sendCapacity));
      const credits = Number(header(headers, Headers.credit));
      if (!isCapacity(capacity) || !isCapacity(sendCapacity) || !Number.isInteger(credits) || credits < 1 || credits > sendWindow(sendCapacity)) {
        return pair.failOpen(netchanError(ErrorCodes.PROTOCOL, 'server sent bad netchan-capacity, netchan-send-capacity or netchan-credit'));
      }
      pair.open({ capacity, sendCapacity, credits });
    });
    return { receive: new RemoteChannel(pair.receiver, 'receive'), send: new RemoteChannel(pair.sender, 'send') };
  }

  /** Counters: streams, channels, byte streams, values and bytes in/out. */
  stats(): Stats {
    const stats = { ...this.counters };
    // forwarded connections count their bytes as they go
    for (const socket of this.forwarded) {
      stats.tcpBytesIn += socket.bytesRead;
      stats.tcpBytesOut += socket.bytesWritten;
    }
    return stats;
  }

  /** Local sockets of this session's forwarded connections open now. */
  private readonly forwarded = new Set<net.Socket>();

  /**
   * Opens one TCP connection to `target` (`host:port`, resolved by the server) through the
   * server's gateway (docs/gateway.md). Resolves once the server is connected, to a Duplex whose
   * bytes are the connection's: `end()` half-closes, a reset arrives as a NetchanError. Rejects with
   * ERR_FORBIDDEN_TARGET, ERR_TARGET_REFUSED, ERR_TARGET_UNREACHABLE, ERR_TARGET_TIMEOUT or ERR_LIMIT.
   */
  dialTcp(target: string, options?: DialTcpOptions): Promise<Duplex> {
    return dialTcp(this.tcpOpener(), target, options);
  }

  /**
   * Listens on `local` (default `127.0.0.1:0`) and forwards every connection to `target` through
   * the server's gateway, like `ssh -L`. Resolves once listening, to a {@link Forwarder} (its
   * `address`, `close()`, and `'connectionError'` events for refused connections).
   */
  forward(options: ForwardOptions): Promise<Forwarder> {
    return forward(this.tcpOpener(), options);
  }

  private tcpOpener(): TcpOpener {
    return {
      counters: this.counters,
      forwarded: this.forwarded,
      session: this,
      open: (target) => {
        if (this.ended) throw netchanError(ErrorCodes.SESSION_CLOSED, 'session is closed');
        return this.open({ [Headers.kind]: 'tcp', [Headers.target]: target }, this.newStreamId());
      },
    };
  }

  /** True once the session ended (closed, or the connection was lost). */
  get closed(): boolean {
    return this.ended;
  }

  /** Ends the session: handles reject pending operations, streams and the connection close. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      if (this.reconnecting) {
        this.fail(netchanError(ErrorCodes.SESSION_CLOSED, 'session closed'));
        return resolve();
      }
      this.stop(netchanError(ErrorCodes.SESSION_CLOSED, 'session closed'), true);
      void this.wire.close().then(resolve);
    });
    return this.closing;
  }

  private fail(error: NetchanError): void {
    if (this.ended) return;
    debug('session %s failed: %s', this.id, error.message);
    this.reconnecting = false;
    this.stop(error);
    this.wire.destroy();
  }

  private stop(error: NetchanError, graceful = false): void {
    if (this.ended) return;
    this.control?.stop();
    // graceful: the channel streams' acknowledgements are written before the control stream ends
    if (graceful) this.teardown(error, true);
    this.control?.end();
    this.teardown(error);
    this.counters.sessions = 0;
    publish('sessionClose', () => ({ side: 'client', sessionId: this.id, code: error.code, message: error.message }));
    this.emit('close', error);
  }

  private newStreamId(): string {
    return `c${this.nextStream++}`;
  }

  private open(kindHeaders: Record<string, string>, sid: string): ClientWireStream {
    if (kindHeaders[Headers.kind] !== 'resume') this.assertCanOpen();
    const stream = this.wire.open({
      ...this.extraHeaders,
      [Headers.version]: PROTOCOL_VERSION,
      [Headers.session]: this.id,
      [Headers.stream]: sid,
      ...kindHeaders,
    });
    stream.bytes.on('error', (err) => debug('stream %s error: %s', sid, err.message));
    this.track(stream);
    return stream;
  }

  private remoteOn<T>(stream: ClientWireStream, sid: string, kindHeaders: Record<string, string>): RemoteEndpoint<T> {
    const rc = this.attachRemote<T>(this.framed(stream), sid);
    this.awaitAnswer(stream, sid, kindHeaders, ({ status, headers }) => {
      if (status !== 200) return rc.failOpen(refusal(status, headers));
      const capacity = Number(header(headers, Headers.capacity));
      const credits = Number(header(headers, Headers.credit));
      if (!Number.isInteger(capacity) || capacity < 0 || !Number.isInteger(credits) || credits < 1 || credits > sendWindow(capacity)) {
        return rc.failOpen(netchanError(ErrorCodes.PROTOCOL, 'server sent bad netchan-capacity or netchan-credit'));
      }
      rc.open({ capacity, credits });
    });
    return rc;
  }

  /**
   * Channel streams whose opening the server has not answered yet, with their headers: if the
   * connection is lost before the answer, the stream is resumed (the server got it) or opened
   * again (it did not), and the answer comes with that.
   */
  private readonly unanswered = new Map<string, { kindHeaders: Record<string, string>; answer: (response: WireResponse) => void }>();

  private awaitAnswer(stream: ClientWireStream, sid: string, kindHeaders: Record<string, string>, answer: (response: WireResponse) => void): void {
    const entry = { kindHeaders, answer };
    if (this.resumable) this.unanswered.set(sid, entry);
    stream.onResponse((response) => this.answered(sid, entry, response));
  }

  private answered(sid: string, entry: { answer: (response: WireResponse) => void }, response: WireResponse): void {
    if (this.resumable) {
      if (this.unanswered.get(sid) !== entry) return; // answered already, on this or another stream
      this.unanswered.delete(sid);
    }
    entry.answer(response);
  }

  /** No stream opens while the session is being resumed: a value needing one is refused at once, not sent. */
  private assertCanOpen(): void {
    if (this.reconnecting) {
      throw netchanError(ErrorCodes.CONNECTION_LOST, 'the connection is lost and the session is being resumed: new channels and byte streams can be opened once it is back', { mayHaveBeenDelivered: false });
    }
  }

  /**
   * The server's `maxChannelsPerSession`, from `netchan-max-channels`: an export over it is
   * refused here, so that the send carrying it rejects with ERR_LIMIT before anything is written.
   * @internal
   */
  limitChannels(max: number): void {
    this.peerMaxChannels = max;
    this.collection = new CollectionTrigger(max);
  }

  private peerMaxChannels = Infinity;

  protected exportChannel(ch: ExportableChannel): ExportPlan {
    this.assertCanOpen();
    const open = this.exporters.size + this.remotes.size;
    if (open >= this.peerMaxChannels) {
      throw netchanError(ErrorCodes.LIMIT, `this session has ${open} channel streams open, the server's limit of ${this.peerMaxChannels}`, { mayHaveBeenDelivered: false });
    }
    const sid = this.newStreamId();
    const kindHeaders = {
      [Headers.kind]: 'channel',
      [Headers.exportRef]: sid,
      [Headers.capacity]: String(ch.capacity),
      [Headers.credit]: String(ChannelExporter.initialCredits(ch)),
    };
    let fs: FramedStream | undefined;
    return {
      ref: { o: 'c', id: sid },
      open: () => {
        const stream = this.open(kindHeaders, sid);
        const opened = this.framed(stream);
        fs = opened;
        this.attachExporter(opened, ch, sid);
        this.awaitAnswer(stream, sid, kindHeaders, ({ status, headers }) => {
          if (status !== 200) opened.destroy(refusal(status, headers));
        });
      },
      undo: () => fs?.destroy(netchanError(ErrorCodes.STREAM_RESET, 'the value naming this channel was not sent')),
    };
  }

  protected exportBytes(obj: object, mode: BytesMode): ExportPlan {
    this.assertCanOpen();
    const sid = this.newStreamId();
    let stream: ClientWireStream | undefined;
    return {
      ref: { o: 'c', id: sid, m: mode },
      open: () => {
        stream = this.open({ [Headers.kind]: 'bytes', [Headers.exportRef]: sid, [Headers.mode]: mode }, sid);
        this.trackBytes(stream, sid);
        // a refusal's text body is no byte stream: the local stream fails with the refusal's code
        const opened = stream;
        opened.onResponse(({ status, headers }) => {
          if (status !== 200) refuseByteStream(opened.bytes, refusal(status, headers));
        });
      },
      // not joined yet: the program's stream object is untouched
      undo: () => stream?.reset(),
      start: () => joinBytes(obj, (stream as ClientWireStream).bytes, mode),
    };
  }

  protected referencePresent(_kind: ReferenceKind, ref: ParsedReference): boolean {
    // the server never opens a stream: everything a value from it names is here or never will be
    if (ref.back !== undefined) {
      if (!this.exporters.has(ref.back)) throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, `no channel stream ${ref.back} in this session`);
      return true;
    }
    if (ref.owner !== 's') throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'the server cannot name a client-owned reference');
    this.assertCanOpen();
    return true;
  }

  protected importChannel(owner: 'c' | 's', id: string): unknown {
    if (owner !== 's') throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'the server cannot name a client-owned reference');
    const sid = this.newStreamId();
    const kindHeaders = { [Headers.kind]: 'channel', [Headers.ref]: id };
    return new RemoteChannel(this.remoteOn(this.open(kindHeaders, sid), sid, kindHeaders));
  }

  protected importBytes(owner: 'c' | 's', id: string, mode: BytesMode): unknown {
    if (owner !== 's') throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'the server cannot name a client-owned reference');
    const sid = this.newStreamId();
    const wire = this.open({ [Headers.kind]: 'bytes', [Headers.ref]: id }, sid);
    this.trackBytes(wire, sid);
    const stream = wire.bytes;
    wire.onResponse(({ status, headers }) => {
      if (status !== 200) refuseByteStream(stream, refusal(status, headers));
    });
    if (mode === 'r') stream.end(); // the server's Readable: nothing flows from us
    if (mode === 'w') stream.resume(); // the server's Writable: nothing flows to us
    return stream;
  }
}

function isCapacity(n: number): boolean {
  return Number.isInteger(n) && n >= 0;
}
