/**
 * Web streams as byte streams: a page's `ReadableStream` or `WritableStream` inside a value is
 * joined to its wire stream as a Node stream, and a byte stream a browser session receives is
 * given to the page as web streams. Node has `Readable.fromWeb`/`toWeb`, but the stream module a
 * browser build carries has no working ones: these, with backpressure both ways, serve both.
 */
import { Readable, Writable, type Duplex } from 'node:stream';
import { ErrorCodes, netchanError } from '../core/errors.js';

/** A web stream of bytes as a Node Readable: read as the Readable is read, cancelled when it is destroyed. */
export function readableOfWeb(web: ReadableStream<Uint8Array>): Readable {
  const reader = web.getReader();
  return new Readable({
    read() {
      reader.read().then(
        ({ done, value }) => {
          if (done) this.push(null);
          else this.push(value);
        },
        (err: unknown) => this.destroy(failure(err)),
      );
    },
    destroy(err, cb) {
      reader.cancel(err ?? undefined).catch(() => undefined);
      cb(err);
    },
  });
}

/** A web WritableStream of bytes as a Node Writable: each write waits for the web stream to take it. */
export function writableOfWeb(web: WritableStream<Uint8Array>): Writable {
  const writer = web.getWriter();
  return new Writable({
    write(chunk: Uint8Array, _encoding, cb) {
      writer.write(plain(chunk)).then(
        () => cb(),
        (err: unknown) => cb(failure(err)),
      );
    },
    final(cb) {
      writer.close().then(
        () => cb(),
        (err: unknown) => cb(failure(err)),
      );
    },
    destroy(err, cb) {
      if (err) writer.abort(err).catch(() => undefined);
      cb(err);
    },
  });
}

/**
 * What a web stream rejected with, as an Error: a rejection may have any reason, `undefined`
 * too (`Promise.reject()`, `controller.error()`), which a Node callback takes for success.
 */
function failure(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(`web stream failed: ${String(reason)}`);
}

/** The bytes of a chunk as a plain Uint8Array (a view, no copy), whatever subclass it was. */
function plain(chunk: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(chunk) === Uint8Array.prototype ? chunk : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

/** Bytes buffered in a web ReadableStream made of a Node stream before the Node stream is paused. */
const WEB_HIGH_WATER_BYTES = 64 * 1024;

/** The readable side of a Node stream as a web ReadableStream, paused while the page does not read. */
export function webReadable(stream: Duplex): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        stream.on('data', (chunk: Uint8Array) => {
          controller.enqueue(plain(chunk));
          if ((controller.desiredSize ?? 0) <= 0) stream.pause();
        });
        stream.once('end', () => controller.close());
        stream.once('error', (err) => controller.error(err));
        stream.pause();
      },
      pull() {
        stream.resume();
      },
      cancel() {
        stream.destroy();
      },
    },
    { highWaterMark: WEB_HIGH_WATER_BYTES, size: (chunk) => chunk.byteLength },
  );
}

/** The writable side of a Node stream as a web WritableStream: a write resolves once the stream takes more. */
export function webWritable(stream: Duplex): WritableStream<Uint8Array> {
  let failed: Error | undefined;
  stream.once('error', (err) => (failed = err));
  return new WritableStream<Uint8Array>({
    write(chunk) {
      if (failed) throw failed;
      let more: boolean;
      try {
        more = stream.write(chunk);
      } catch (err) {
        // not bytes: the byte stream fails with the web stream, or the peer's side stays open
        failed = netchanError(ErrorCodes.INVALID_ARGUMENT, `a byte stream is written Uint8Arrays: ${(err as Error).message}`);
        stream.destroy(failed);
        throw failed;
      }
      if (more) return;
      return new Promise<void>((resolve, reject) => {
        const done = (err?: Error): void => {
          stream.off('drain', done);
          stream.off('error', done);
          stream.off('close', closed);
          if (err) reject(err);
          else resolve();
        };
        const closed = (): void => done(failed ?? new Error('byte stream closed'));
        stream.once('drain', done);
        stream.once('error', done);
        stream.once('close', closed);
      });
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        if (failed) return reject(failed);
        stream.end(() => (failed ? reject(failed) : resolve()));
      });
    },
    abort() {
      stream.destroy();
    },
  });
}

/** What a browser session gives the page for a byte stream it received, by the stream's mode. */
export type WebBytes = ReadableStream<Uint8Array> | WritableStream<Uint8Array> | { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> };

/**
 * A received byte stream as web streams: the owner's Readable (`r`) a ReadableStream, its
 * Writable (`w`) a WritableStream, a Duplex (`d`) both.
 */
export function webBytes(stream: Duplex, mode: 'r' | 'w' | 'd'): WebBytes {
  if (mode === 'r') return webReadable(stream);
  if (mode === 'w') return webWritable(stream);
  return { readable: webReadable(stream), writable: webWritable(stream) };
}
