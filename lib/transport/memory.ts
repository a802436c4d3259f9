/**
 * The in-memory adapter of the transport contract: a client and a server session in one
 * process, no sockets. Each connection is a pair of message pipes carrying the WebSocket mux
 * (docs/PROTOCOL.md §7): the same streams, windows, half-closes and resets as over a WebSocket,
 * delivered a turn later instead of through TCP. For programs that want channels between parts
 * of one process with the semantics of the network, and for tests about semantics, not wire.
 */
import { EventEmitter } from 'node:events';
import type { ClientWireSession, ServerWireStream } from './contract.js';
import { WsMux, type MuxCarrier, type MuxStream } from './ws-mux.js';

/** WebSocket close codes the pipe reports (RFC 6455 §7.4.1). */
const NORMAL_CLOSE = 1000;

/**
 * One end of an in-memory message pipe. Messages sent in one turn arrive together in a later
 * one, never inside the sender's call (as from a socket); `bufferedAmount` counts what the peer
 * has not taken yet, so the mux's congestion rule holds in memory too.
 */
class PipeEnd extends EventEmitter implements MuxCarrier {
  peer!: PipeEnd;
  readyState = 1;
  bufferedAmount = 0;
  /** What the mux asks of the socket under a WebSocket: a `'drain'` once what was sent is taken. */
  readonly _socket = { on: (_event: 'drain', fn: () => void): void => void this.on('drain', fn) };
  private queue: Buffer[] = [];
  private scheduled = false;

  send(data: Buffer): void {
    if (this.readyState !== 1) return;
    this.queue.push(data);
    this.bufferedAmount += data.length;
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.deliver());
  }

  private deliver(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    for (const data of batch) {
      this.bufferedAmount -= data.length;
      if (this.peer.readyState === 1) this.peer.emit('message', data, true);
    }
    // streams held back while the pipe was congested go on, as after a socket's drain
    if (batch.length > 0 && this.readyState === 1) this.emit('drain');
  }

  /** Closes both ends once what was sent is delivered. */
  close(): void {
    if (this.readyState !== 1) return;
    this.readyState = 2;
    setImmediate(() => {
      this.deliver();
      this.gone();
      this.peer.gone();
    });
  }

  /** Drops both ends at once: what was not delivered is lost, as with a cut connection. */
  terminate(): void {
    this.queue = [];
    this.bufferedAmount = 0;
    this.peer.queue = [];
    this.gone();
    this.peer.gone();
  }

  private gone(): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.emit('close', NORMAL_CLOSE, Buffer.alloc(0));
  }
}

/** One in-memory connection: the client's wire session, and a way to cut it. */
export interface MemoryConnection {
  readonly client: ClientWireSession;
  /** Cuts the connection as a network would: both sides see it lost, nothing more is delivered. */
  cut(): void;
}

/**
 * Opens an in-memory connection whose server side hands each stream the client opens to
 * `accept` (a server's `serveStream`, which must not throw: the pipe delivers a batch at a time).
 */
export function memoryConnection(accept: (stream: ServerWireStream) => void): MemoryConnection {
  const a = new PipeEnd();
  const b = new PipeEnd();
  a.peer = b;
  b.peer = a;
  const client = new WsMux(a, 'client', undefined, 'memory');
  const server = new WsMux(b, 'server', undefined, 'memory');
  client.on('error', () => undefined);
  server.on('error', () => undefined);
  server.on('stream', (stream: MuxStream) => {
    stream.on('error', () => undefined);
    accept(stream);
  });
  return { client, cut: () => a.terminate() };
}
