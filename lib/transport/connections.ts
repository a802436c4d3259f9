/**
 * Connection-level timeouts of the server (docs/PROTOCOL.md §4.3). A session is logical and may
 * move between connections, so a connection is worth keeping only while it carries a stream of a
 * live session: one that sends nothing, or is left over after its sessions ended or timed out, is
 * closed. The TLS handshake timeout is `tls.Server`'s own; this file watches what comes after it:
 * the first request (the HTTP/2 preface and a stream, or an HTTP/1.1 request such as the
 * WebSocket upgrade) and the time a connection spends without a live netchan stream.
 */
import type { Duplex } from 'node:stream';
import { debug } from '../core/debug.js';

/** Where a socket keeps its {@link ServerConnection}; an HTTP/2 session's socket proxy passes it through. */
const CONNECTION = Symbol('netchan.connection');

/** How long a connection being closed may take to say goodbye (GOAWAY, WebSocket close) before it is dropped. */
const CLOSE_GRACE_MS = 1000;

/** The timeouts a {@link ServerConnection} enforces, in ms; 0 disables one. */
export interface ConnectionTimeouts {
  firstRequestTimeoutMs: number;
  noSessionTimeoutMs: number;
}

type Socket = Duplex & { destroyed: boolean; [CONNECTION]?: ServerConnection };

/** What can be closed gracefully and then dropped: an HTTP/2 session or a WebSocket mux. */
interface Closable {
  close(): void;
  destroy(): void;
  readonly destroyed: boolean;
}

/** One client connection as the server sees it. */
export class ServerConnection {
  /** Anonymous sessions whose control stream is on this connection and that have no other stream open. */
  unusedAnonymousSessions = 0;
  /** Streams of live sessions open on this connection. */
  private live = 0;
  private requested: boolean;
  private governed: boolean;
  private timer: NodeJS.Timeout | null = null;
  private closer: () => void;
  /**
   * The socket closed. Kept here: the socket may be an HTTP/2 session's socket proxy, which
   * throws on every property once its session let go of the socket.
   */
  private socketClosed = false;

  private constructor(
    socket: Socket,
    private readonly timeouts: ConnectionTimeouts,
    options: { requested: boolean; governed: boolean },
  ) {
    this.requested = options.requested;
    this.governed = options.governed;
    this.closer = () => socket.destroy();
    socket[CONNECTION] = this;
    socket.on('close', () => {
      this.socketClosed = true;
      this.clear();
    });
    if (!this.requested && timeouts.firstRequestTimeoutMs > 0) {
      this.timer = setTimeout(() => {
        this.timer = null;
        debug('connection sent no request within %d ms, closed', timeouts.firstRequestTimeoutMs);
        socket.destroy();
      }, timeouts.firstRequestTimeoutMs);
      this.timer.unref();
    } else {
      this.arm();
    }
  }

  /**
   * Watches a connection the server accepted (after its TLS handshake): its first request must
   * come within `firstRequestTimeoutMs`.
   */
  static accepted(socket: Duplex, timeouts: ConnectionTimeouts): ServerConnection {
    return new ServerConnection(socket as Socket, timeouts, { requested: false, governed: true });
  }

  /**
   * Watches a connection that reached netchan through someone else's server (an Express app):
   * its request already came. `governed` false: it carries the app's traffic too, and netchan
   * only counts its sessions, never closes it.
   */
  static adopted(socket: Duplex, timeouts: ConnectionTimeouts, governed: boolean): ServerConnection {
    return new ServerConnection(socket as Socket, timeouts, { requested: true, governed });
  }

  /** The connection a socket, or the socket proxy of an HTTP/2 session, belongs to. */
  static of(socket: unknown): ServerConnection | undefined {
    return (socket as Socket | undefined)?.[CONNECTION];
  }

  /** From now on the connection is closed as `closable` says: gracefully, then dropped after a grace period. */
  closeWith(closable: Closable): void {
    this.closer = () => {
      closable.close();
      // destroying the session (or mux) destroys its socket; an HTTP/2 session's socket proxy
      // refuses to be destroyed directly
      setTimeout(() => {
        if (!closable.destroyed) closable.destroy();
      }, CLOSE_GRACE_MS).unref();
    };
  }

  /** The first request arrived (an HTTP/2 stream, an HTTP/1.1 request or upgrade). */
  request(): void {
    if (this.requested) return;
    this.requested = true;
    this.clear();
    this.arm();
  }

  /** The connection carries the app's own traffic: netchan never closes it. */
  disown(): void {
    this.governed = false;
    this.clear();
  }

  /** A stream of a live session opened on this connection. */
  streamOpened(): void {
    this.live++;
    this.clear();
  }

  /** A stream of a session closed on this connection. */
  streamClosed(): void {
    this.live--;
    this.arm();
  }

  private arm(): void {
    const ms = this.timeouts.noSessionTimeoutMs;
    if (!this.governed || !this.requested || this.live > 0 || this.timer || this.socketClosed || ms <= 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      debug('connection without a live session for %d ms, closed', ms);
      this.closer();
    }, ms);
    this.timer.unref();
  }

  private clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
