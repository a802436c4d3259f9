/**
 * The WebSocket adapter of the transport contract (lib/transport/contract.ts): a session's
 * streams multiplexed over one WebSocket (docs/PROTOCOL.md §7), for paths where only HTTP/1.1
 * gets through. Each mux stream (lib/transport/mux-stream.ts) has its own flow control window,
 * half-close and reset; the frames are lib/wire/mux-frames.ts.
 */
import { EventEmitter } from 'node:events';
import { publish } from '../core/diagnostics.js';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import { MUX_MAX_STREAMS, MuxType, ResetCode, WS_CLOSE_PROTOCOL, decodeMuxFrame, encodeHeaders, encodeMuxFrame, protocolError, u32 } from '../wire/mux-frames.js';
import { onConnectionClose, type ClientWireSession, type WirePeer } from './contract.js';
import { peerOfSocket } from './peer.js';
import { MuxStream, type MuxLink } from './mux-stream.js';

export { MUX_MAX_MESSAGE, WS_SUBPROTOCOL } from '../wire/mux-frames.js';
export { MuxStream } from './mux-stream.js';

/**
 * What carries a mux's messages: the few things of a `ws` WebSocket it uses, which the
 * in-memory transport (lib/transport/memory.ts) provides too.
 */
export interface MuxCarrier {
  send(data: Buffer, options: { binary: true }): void;
  close(code: number, reason: string): void;
  terminate(): void;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  readonly bufferedAmount: number;
  /** 1 while open, as a WebSocket's. */
  readonly readyState: number;
  /** The TCP (or TLS) socket under a WebSocket; none in memory. */
  readonly _socket?: { remoteAddress?: string; cork?(): void; uncork?(): void; on?(event: 'drain', fn: () => void): void };
}

/** Above this many bytes buffered in the WebSocket, streams wait for it to drain. */
const CONGESTED_BYTES = 4 * 1024 * 1024;

/**
 * Streams multiplexed over one WebSocket. On the client it opens streams (`open`); on the
 * server it emits `'stream'` (a {@link MuxStream}) for each stream the client opens. Emits `'close'`
 * once the WebSocket is gone and `'error'` on a protocol violation by the peer.
 */
export class WsMux extends EventEmitter implements ClientWireSession, MuxLink {
  /** True once `close()` was called: no new streams. */
  closed = false;
  /** True once the WebSocket is gone. */
  destroyed = false;
  private readonly streams = new Map<number, MuxStream>();
  private lastStreamId = 0;
  private drainWaiters = new Set<MuxStream>();
  private corked = false;
  private closeCallbacks: (() => void)[] = [];

  private peerInfo: WirePeer | undefined;
  /** The pseudo-headers each stream a client opens carries (§7.2). */
  private readonly pseudo: Record<string, string>;

  constructor(
    private readonly ws: MuxCarrier,
    readonly role: 'client' | 'server',
    /** The client's endpoint URL: its path is every stream's `:path`. */
    url?: URL,
    /** What carries it: a WebSocket, or the in-memory transport. */
    readonly kind: 'ws' | 'memory' = 'ws',
  ) {
    super();
    this.pseudo = { ':method': 'POST', ':path': url?.pathname || '/' };

    ws.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
    ws.on('close', () => this.gone());
    ws.on('error', (err: Error) => {
      if (this.listenerCount('error') > 0) this.emit('error', err);
    });
    ws._socket?.on?.('drain', () => this.drained());
  }

  /**
   * What a server knows of the connection, asked of the socket when the first stream arrives
   * (the server's watch over an upgraded connection starts after the mux).
   */
  get peer(): WirePeer {
    this.peerInfo ??= peerOfSocket(this.kind, this.ws._socket);
    return this.peerInfo;
  }

  /** Streams open on this WebSocket. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Opens a stream with these request headers (client side). */
  open(headers: Readonly<Record<string, string>>): MuxStream {
    if (this.role !== 'client') throw new Error('only the client opens mux streams');
    if (this.closed || this.destroyed) throw netchanError(ErrorCodes.SESSION_CLOSED, 'WebSocket mux is closed');
    const id = ++this.lastStreamId;
    const stream = new MuxStream(id, this);
    this.streams.set(id, stream);
    this.send(MuxType.HEADERS, id, encodeHeaders({ ...this.pseudo, ...headers }));
    return stream;
  }

  onClose(fn: (error: NetchanError) => void): void {
    onConnectionClose(this, fn);
  }


  /** Opens no more streams; closes the WebSocket once every stream is done, then resolves. */
  close(): Promise<void> {
    const closed = new Promise<void>((resolve) => {
      if (this.destroyed) queueMicrotask(resolve);
      else this.closeCallbacks.push(resolve);
    });
    this.closed = true;
    if (this.streams.size === 0 && !this.destroyed) this.ws.close(1000, 'done');
    return closed;
  }

  /**
   * Drops the WebSocket from the next turn (what this turn wrote is corked until then, and would
   * be lost); every stream fails.
   */
  destroy(): void {
    if (this.destroyed) return;
    setImmediate(() => {
      if (this.destroyed) return;
      this.ws.terminate();
      this.gone();
    });
  }

  /** @internal */
  get congested(): boolean {
    return this.ws.bufferedAmount > CONGESTED_BYTES;
  }

  /** @internal */
  waitDrain(stream: MuxStream): void {
    this.drainWaiters.add(stream);
  }

  /** @internal */
  send(type: number, stream: number, payload?: Uint8Array): void {
    if (this.destroyed || this.ws.readyState !== 1 /* OPEN */) return;
    // the frames of one turn go out in as few TLS records as possible
    const socket = this.ws._socket;
    if (!this.corked && socket?.cork && socket.uncork) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork!();
      });
    }
    this.ws.send(encodeMuxFrame(type, stream, payload), { binary: true });
  }

  /** @internal a stream is complete or reset */
  forget(stream: MuxStream): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    this.drainWaiters.delete(stream);
    if (this.closed && this.streams.size === 0 && !this.destroyed) this.ws.close(1000, 'done');
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.destroyed) return;
    let frame: ReturnType<typeof decodeMuxFrame>;
    try {
      if (!isBinary) throw protocolError('text message');
      frame = decodeMuxFrame(data);
    } catch (err) {
      return this.violation(err as NetchanError);
    }
    const stream = this.streams.get(frame.stream);
    if (stream) return stream.onFrame(frame);
    if (frame.type === MuxType.HEADERS && this.role === 'server') {
      if (frame.stream <= this.lastStreamId) return this.violation(protocolError(`stream ${frame.stream} opened out of order`));
      this.lastStreamId = frame.stream;
      if (this.closed || this.streams.size >= MUX_MAX_STREAMS) {
        this.send(MuxType.RESET, frame.stream, u32(ResetCode.REFUSED_STREAM));
        return;
      }
      const s = new MuxStream(frame.stream, this, frame.headers);
      this.streams.set(frame.stream, s);
      this.emit('stream', s);
      return;
    }
    // a frame for a stream already gone (a reset crossing it on the wire), or one never opened
    if (frame.stream > this.lastStreamId) this.violation(protocolError(`frame for stream ${frame.stream}, never opened`));
  }

  private violation(err: NetchanError): void {
    publish('protocolError', () => ({ side: this.role, sessionId: undefined, streamId: undefined, code: err.code, message: err.message }));
    if (this.listenerCount('error') > 0) this.emit('error', err);
    this.ws.close(WS_CLOSE_PROTOCOL, err.message.slice(0, 120));
    // a peer that does not answer the close handshake is dropped
    setTimeout(() => this.destroy(), 1000).unref?.(); // a browser's timers have none
  }

  private drained(): void {
    if (this.congested) return;
    const waiters = [...this.drainWaiters];
    this.drainWaiters.clear();
    for (const s of waiters) s.onDrain();
  }

  private gone(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.closed = true;
    for (const s of [...this.streams.values()]) s.onMuxGone();
    this.streams.clear();
    this.drainWaiters.clear();
    const callbacks = this.closeCallbacks;
    this.closeCallbacks = [];
    for (const cb of callbacks) cb();
    this.emit('close');
  }
}
