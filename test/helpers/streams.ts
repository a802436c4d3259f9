/** Reading streams in tests: all of it, its digest, what a Writable took, or a plain HTTP GET through a local port. */
import { createHash } from 'node:crypto';
import http from 'node:http';
import { Writable } from 'node:stream';

/** A Writable that keeps every chunk it is given in `got`; its errors are the test's to look at (`sink.errored`). */
export function collectingSink(): { sink: Writable; got: Buffer[] } {
  const got: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, cb) {
      got.push(chunk);
      cb();
    },
  });
  sink.on('error', () => undefined);
  return { sink, got };
}

/** Everything a stream gives until it ends (rejects if it fails). */
export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

/** The SHA-256 (hex) and length of everything a stream gives until it ends. */
export async function digestOf(stream: NodeJS.ReadableStream): Promise<{ hex: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { hex: hash.digest('hex'), bytes };
}

/** GET from 127.0.0.1:`port` without keep-alive: the status and the body as text. */
export function httpGet(port: number, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}
