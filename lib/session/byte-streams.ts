/**
 * Byte streams inside values (docs/PROTOCOL.md §6): which local stream objects can travel and in
 * which direction, how one is joined to the wire stream that carries it, and how the Duplex a
 * program is given fails: always with a NetchanError.
 */
import { Duplex, Readable, Writable, pipeline } from 'node:stream';
import { debug } from '../core/debug.js';
import { ErrorCodes, fromNodeError, netchanError } from '../core/errors.js';
import { readableOfWeb, writableOfWeb } from './web-streams.js';

/** Byte-stream direction, from the owner's side: r = owner's data flows out, w = flows in, d = both. */
export type BytesMode = 'r' | 'w' | 'd';

/** Decides the byte-stream mode of a stream object, or throws ERR_ENCODE. */
export function bytesModeOf(obj: object): BytesMode {
  if (obj instanceof Duplex) return 'd';
  if (obj instanceof Readable) return 'r';
  if (obj instanceof Writable) return 'w';
  if (typeof ReadableStream === 'function' && obj instanceof ReadableStream) return 'r';
  if (typeof WritableStream === 'function' && obj instanceof WritableStream) return 'w';
  throw netchanError(ErrorCodes.ENCODE, 'only Node Readable, Writable, Duplex and web ReadableStream, WritableStream can travel as byte streams');
}

/** Joins a local stream object to the wire stream's bytes that carry it, in the direction(s) of `mode`. */
export function joinBytes(local: object, wire: Duplex, mode: BytesMode, side: 'client' | 'server' = 'client'): void {
  const done = (err: Error | null | undefined) => {
    if (err) debug('byte stream ended with %s', err.message);
  };
  if (typeof ReadableStream === 'function' && local instanceof ReadableStream) local = readableOfWeb(local);
  else if (typeof WritableStream === 'function' && local instanceof WritableStream) local = writableOfWeb(local);
  if (mode === 'r' || mode === 'd') pipeline(local as Readable, wire, done);
  // Nothing flows from a Writable. The server's side is the response: it ends only after the
  // request body, since proxies (nginx grpc_pass, Caddy) stop forwarding a request body once
  // its response is complete.
  else if (side === 'server') wire.once('end', () => wire.end());
  else wire.end();
  if (mode === 'w' || mode === 'd') pipeline(wire, local as Writable, done);
  else wire.resume();
}

/**
 * Makes the Duplex of a byte stream the program holds fail with NetchanErrors only: whatever
 * ends it with an error (a reset by the peer, whose source failed or whose session ended; the
 * connection lost) ends it with a NetchanError, in `stream.errored` and in what for-await or
 * pipeline throw too.
 */
export function takeBytes(stream: Duplex): void {
  stream.on('error', (err) => debug('byte stream error: %s', (err as Error).message));
  // Both ends of Node's destroy are mapped, before it records the error: the error destroy is
  // given (a WebSocket mux stream's reset), and the one an HTTP/2 stream's _destroy makes up
  // from the RST code.
  const bytes = stream as Duplex & { destroy(err?: Error, cb?: unknown): Duplex; _destroy(err: Error | null, cb: (err?: Error | null) => void): void };
  const toNetchan = (err: Error | null | undefined) => (err ? fromNodeError(err, ErrorCodes.STREAM_RESET) : err);
  const destroy = bytes.destroy;
  bytes.destroy = function (err?: Error, cb?: unknown) {
    return destroy.call(this, toNetchan(err) ?? undefined, cb);
  };
  // Destroyed before its end without a word (an HTTP/2 stream of a lost connection, a peer's
  // CANCEL that Node takes quietly): the reader would see Node's bare "Premature close".
  const destroyImpl = bytes._destroy;
  bytes._destroy = function (err, cb) {
    destroyImpl.call(this, err, (e) => {
      if (!e && !this.readableEnded) e = netchanError(ErrorCodes.STREAM_RESET, 'byte stream cut off before its end');
      cb(toNetchan(e));
    });
  };
}
