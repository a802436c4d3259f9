/**
 * The client's end of the TCP gateway (docs/gateway.md, docs/PROTOCOL.md §8): a stream of kind
 * `tcp` naming a target, whose bytes, once the server connected, are the connection's.
 * `session.dialTcp` hands the stream to the program; `session.forward` joins it to each
 * connection of a local listener, like `ssh -L`.
 */
import { EventEmitter } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { debug } from '../core/debug.js';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';
import { refusal } from '../wire/headers.js';
import { formatHostPort, parseHostPort } from '../wire/host-port.js';
import type { Stats } from '../session/stream-context.js';
import type { ClientWireStream, WireResponse } from '../transport/contract.js';
import { join } from '../transport/relay.js';
import { takeBytes } from '../session/byte-streams.js';

/** What the client half needs of its session. @internal */
export interface TcpOpener {
  /** Opens a `tcp` stream naming `target` (throws when the session cannot open streams). */
  open(target: string): ClientWireStream;
  readonly counters: Stats;
  /** Local sockets of forwarded connections open now: their byte counts are live. */
  readonly forwarded: Set<net.Socket>;
  /** The session: its `'close'` event resets the tunnels at once (they have nothing to drain). */
  readonly session: EventEmitter;
}

/** Opens a tunnel stream that is reset as soon as its session ends. */
function openTunnel(opener: TcpOpener, target: string): ClientWireStream {
  const wire = opener.open(target);
  const onSessionEnd = (): void => wire.fail(netchanError(ErrorCodes.SESSION_CLOSED, 'session closed'));
  opener.session.once('close', onSessionEnd);
  wire.bytes.once('close', () => opener.session.off('close', onSessionEnd));
  return wire;
}

/** Options of `session.dialTcp`. */
export interface DialTcpOptions {
  /** Gives up (resetting the stream) when it fires: ERR_ABORTED. */
  signal?: AbortSignal;
}

/** Options of `session.forward`. */
export interface ForwardOptions {
  /** Where to listen: `host:port` (port 0 picks a free one). Default `127.0.0.1:0`. */
  local?: string;
  /** The target, as the server resolves it: `host:port`. */
  target: string;
}

/** Waits for the answer to a `tcp` stream: the stream once connected, or the refusal. */
function established(wire: ClientWireStream, signal?: AbortSignal): Promise<ClientWireStream> {
  const stream = wire.bytes;
  return new Promise((resolve, reject) => {
    let settled = false;
    const cleanup = (): void => {
      settled = true;
      stream.off('close', onClose);
      stream.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const onResponse = ({ status, headers }: WireResponse): void => {
      if (settled) return;
      cleanup();
      if (status === 200) return resolve(wire);
      stream.resume();
      wire.reset();
      reject(refusal(status, headers));
    };
    let lastError: Error | undefined;
    const onError = (err: Error): void => {
      lastError = err;
    };
    const onClose = (): void => {
      cleanup();
      reject(lastError ? fromNodeError(lastError) : netchanError(ErrorCodes.CONNECTION_LOST, 'the tunnel stream closed before the gateway answered'));
    };
    const onAbort = (): void => {
      cleanup();
      wire.reset();
      reject(netchanError(ErrorCodes.ABORTED, 'dialTcp aborted', { cause: signal?.reason }));
    };
    if (signal?.aborted) return onAbort();
    wire.onResponse(onResponse);
    stream.on('error', onError);
    stream.once('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function counted(wire: ClientWireStream, counters: Stats): void {
  counters.tcpConnections++;
  wire.bytes.once('close', () => counters.tcpConnections--);
}

/**
 * Opens one TCP connection through the gateway: resolves, once the server connected, to a Duplex
 * whose bytes are the connection's (`end()` half-closes; a reset arrives as an error). Rejects
 * with the refusal: ERR_FORBIDDEN_TARGET, ERR_TARGET_REFUSED, ERR_TARGET_UNREACHABLE,
 * ERR_TARGET_TIMEOUT, ERR_LIMIT. @internal use `session.dialTcp`
 */
export async function dialTcp(opener: TcpOpener, target: string, options: DialTcpOptions = {}): Promise<Duplex> {
  const { host, port } = parseHostPort(target);
  const wire = openTunnel(opener, formatHostPort(host, port));
  await established(wire, options.signal);
  counted(wire, opener.counters);
  // the program holds it: it fails with NetchanErrors, whatever the transport
  takeBytes(wire.bytes);
  return wire.bytes;
}

/**
 * A local listener whose connections are forwarded through the gateway to one target; it closes
 * when its session ends. Events:
 * `'connection'` (local socket) once a connection is through, `'connectionError'` (NetchanError,
 * local socket) when the gateway refused or failed one (the local socket is then reset).
 */
export class Forwarder extends EventEmitter {
  private readonly sockets = new Set<net.Socket>();
  private closing: Promise<void> | null = null;

  /** @internal */
  constructor(
    private readonly server: net.Server,
    /** The target every connection is forwarded to. */
    readonly target: string,
  ) {
    super();
  }

  /** The bound local address. */
  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Local connections open now. */
  get connections(): number {
    return this.sockets.size;
  }

  /** @internal */
  adopt(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** Stops listening and resets the connections still open. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.resetAndDestroy();
    });
    return this.closing;
  }
}

/**
 * Listens on `options.local` and forwards each connection to `options.target` through the
 * gateway. @internal use `session.forward`
 */
export async function forward(opener: TcpOpener, options: ForwardOptions): Promise<Forwarder> {
  const { host: th, port: tp } = parseHostPort(options?.target);
  const target = formatHostPort(th, tp);
  const local = parseHostPort(options.local ?? '127.0.0.1:0', true);
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  const forwarder = new Forwarder(server, target);
  server.on('connection', (socket) => {
    forwarder.adopt(socket);
    socket.on('error', (err) => debug('forward: local socket error: %s', err.message));
    let wire: ClientWireStream;
    try {
      wire = openTunnel(opener, target);
    } catch (err) {
      socket.resetAndDestroy();
      forwarder.emit('connectionError', err, socket);
      return;
    }
    // the client's first bytes go out at once, ahead of the answer (the server holds them
    // until it has connected, or drops them with a refusal)
    socket.pipe(wire.bytes);
    const giveUp = (): void => wire.reset();
    socket.once('close', giveUp);
    established(wire).then(
      () => {
        socket.off('close', giveUp);
        counted(wire, opener.counters);
        opener.forwarded.add(socket);
        join(
          socket,
          wire,
          () => {
            opener.forwarded.delete(socket);
            opener.counters.tcpBytesIn += socket.bytesRead;
            opener.counters.tcpBytesOut += socket.bytesWritten;
          },
          true,
        );
        forwarder.emit('connection', socket);
      },
      (err: NetchanError) => {
        socket.off('close', giveUp);
        socket.unpipe(wire.bytes);
        if (!socket.destroyed) socket.resetAndDestroy();
        forwarder.emit('connectionError', err, socket);
      },
    );
  });
  // a forwarder lives as long as its session
  const onSessionEnd = (): void => void forwarder.close();
  opener.session.once('close', onSessionEnd);
  server.once('close', () => opener.session.off('close', onSessionEnd));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => {
      opener.session.off('close', onSessionEnd);
      reject(fromNodeError(err, ErrorCodes.INVALID_ARGUMENT));
    });
    server.listen(local.port, local.host, () => {
      server.removeAllListeners('error');
      server.on('error', (err) => debug('forward: listener error: %s', err.message));
      resolve();
    });
  });
  return forwarder;
}
