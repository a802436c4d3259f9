/**
 * The seed API: `listen` and `dial`, one server and many clients joined by two channels.
 *
 * ```ts
 * const server = await listen('127.0.0.1:9876');   // send → each value to one ready client
 * const client = await dial('127.0.0.1:9876');     // receive ← what the server sends
 * ```
 *
 * Underneath it is an ordinary netchan server exporting two channels: `netchan.out` (the
 * server's `send`; clients receive from it and compete for its values) and `netchan.in` (the
 * server's `receive`; every client sends into it). Zero-config on one machine: without a
 * certificate, `listen` creates (once) a development CA and server certificate in a per-user
 * directory and `dial` trusts that CA; across machines pass `ca` or `pin`.
 */
import os from 'node:os';
import path from 'node:path';
import type { Channel, ChannelLike } from '../core/channel.js';
import type { ConnectOptions, Session } from '../client/client.js';
import { connect } from '../client/connect.js';
import type { RemoteChannel } from '../session/channel-stream.js';
import { ensureDevCertificates, loadDevCa } from '../transport/devcert.js';
import { ErrorCodes, netchanError } from '../core/errors.js';
import { createServer, type BackedChannel, type ChannelBackend, type NetchanServer, type ServerOptions } from '../server/server.js';

/** Names of the two channels `listen` exports. */
export const CLUSTER_CHANNELS = { out: 'netchan.out', in: 'netchan.in' } as const;

/** Options of {@link listen}. */
export interface ListenOptions extends ServerOptions {
  /**
   * Capacity of the two channels. Default 128: a client prefetches up to this many values, so a
   * value it took but did not yet hand to its program is one of at most this many that go back
   * to the channel (and to another client) if it disappears.
   */
  capacity?: number;
  /** Where the development certificates live when no `key`/`cert` is given. Default {@link devCertificateDir}. */
  devCertDir?: string;
  /**
   * Keeps the two channels in this backend (`jetstream()`), shared by every server listening
   * with the same one: a value sent through one server may go to a client of another
   * (docs/cluster.md).
   */
  backend?: ChannelBackend;
}

/** What {@link listen} resolves to: its channels are `Channel`s, or shared channels with a `backend`. */
export interface Listener<T, C extends ChannelLike<T> = Channel<T>> {
  /** Each value sent here goes to exactly one connected client ready to take it. */
  send: C;
  /** Values from all clients, merged. */
  receive: C;
  /** The netchan server underneath (stats, more channels). */
  server: NetchanServer;
  /** The bound port. */
  port: number;
  /** The URL clients dial. */
  url: string;
  /**
   * Closes both channels and the server. With a `backend`, the channels are shared and stay open
   * for the other servers: only this server stops (close them with their `close()`).
   */
  close(): Promise<void>;
}

/** Options of {@link dial}. */
export type DialOptions = ConnectOptions & {
  /** Where to find the development CA when neither `ca` nor `pin` is given. Default {@link devCertificateDir}. */
  devCertDir?: string;
};

/**
 * What {@link dial} resolves to. Its two handles share one stream (a pair stream,
 * docs/PROTOCOL.md §5.5), which goes once both are released or dropped.
 */
export interface Dialer<T> {
  /** Values sent here reach the server's `receive`. Only sends: a receive rejects with ERR_INVALID_ARGUMENT. */
  send: RemoteChannel<T>;
  /** The values the server's `send` gives this client. Only receives: a send rejects with ERR_INVALID_ARGUMENT. */
  receive: RemoteChannel<T>;
  /** The session underneath. */
  session: Session;
  /** Releases both handles (values prefetched and not received go back) and ends the session. */
  close(): Promise<void>;
}

/**
 * The per-user directory of the development CA and server certificate:
 * `$NETCHAN_DEV_CERTS`, else `$XDG_DATA_HOME/netchan/dev-certs`, else `~/.local/share/netchan/dev-certs`.
 */
export function devCertificateDir(): string {
  if (process.env.NETCHAN_DEV_CERTS) return process.env.NETCHAN_DEV_CERTS;
  const base = process.env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(base, 'netchan', 'dev-certs');
}

/** Splits `host:port`, `[v6]:port` or a URL into a URL netchan connects to. */
export function parseAddress(address: string, secure = true): URL {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(address)) return new URL(address);
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(address);
  if (!m) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `address must be host:port or a URL, got ${JSON.stringify(address)}`);
  return new URL(`${secure ? 'https' : 'http'}://${m[1]}:${m[2]}/`);
}

/**
 * Starts a server with the two cluster channels. `address` is `host:port` (port 0 picks one)
 * or a URL whose path becomes the endpoint path.
 */
export async function listen<T = unknown>(address: string, options?: ListenOptions & { backend?: undefined }): Promise<Listener<T>>;
export async function listen<T = unknown>(address: string, options: ListenOptions & { backend: ChannelBackend }): Promise<Listener<T, BackedChannel<T>>>;
export async function listen<T = unknown>(address: string, options: ListenOptions = {}): Promise<Listener<T, ChannelLike<T>>> {
  const u = parseAddress(address, !options.insecure);
  let { key, cert } = options;
  if (!options.insecure && (!key || !cert)) {
    const dev = await ensureDevCertificates(options.devCertDir ?? devCertificateDir());
    key = dev.key;
    cert = dev.cert;
  }
  const server = createServer({ ...options, key, cert, path: u.pathname || '/' });
  const capacity = options.capacity ?? 128;
  const { backend } = options;
  let send: ChannelLike<T>;
  let receive: ChannelLike<T>;
  if (backend) {
    const shared = [server.channel<T>(CLUSTER_CHANNELS.out, capacity, { backend }), server.channel<T>(CLUSTER_CHANNELS.in, capacity, { backend })];
    // a shared channel's stream is set up before clients come
    await Promise.all(shared.map((ch) => ch.ready()));
    [send, receive] = shared as [BackedChannel<T>, BackedChannel<T>];
  } else {
    send = server.channel<T>(CLUSTER_CHANNELS.out, capacity);
    receive = server.channel<T>(CLUSTER_CHANNELS.in, capacity);
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const { port } = await server.listen(Number(u.port), host);
  const url = new URL(u.href);
  url.port = String(port);
  return {
    send,
    receive,
    server,
    port,
    url: url.href,
    async close() {
      // shared channels stay open for the other servers: only this one stops
      if (!backend) {
        send.close();
        receive.close();
      }
      await server.close();
    },
  };
}

/**
 * Connects to a {@link listen}ing server. Without `ca` or `pin` it trusts the per-user
 * development CA (made by `listen` on this machine), and fails with `ERR_TLS` when there is none.
 */
export async function dial<T = unknown>(address: string, options: DialOptions = {}): Promise<Dialer<T>> {
  const u = parseAddress(address, !options.insecure);
  let ca = options.ca;
  if (!options.insecure && ca === undefined && options.pin === undefined) {
    const dir = options.devCertDir ?? devCertificateDir();
    ca = await loadDevCa(dir);
    if (ca === undefined) throw netchanError(ErrorCodes.TLS, `no ca or pin given and no development CA in ${dir}: pass ca or pin to dial another machine`);
  }
  const session = await connect(u, { ...options, ca });
  // one stream for both channels (a pair stream, docs/PROTOCOL.md §5.5)
  const { receive, send } = session.pair<T>(CLUSTER_CHANNELS.out, CLUSTER_CHANNELS.in);
  return {
    send,
    receive,
    session,
    async close() {
      receive.release();
      send.release();
      await session.close();
    },
  };
}

