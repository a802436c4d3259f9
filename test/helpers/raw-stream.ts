/** A raw HTTP/2 client stream that speaks the wire protocol by hand (docs/PROTOCOL.md), for hostile-peer tests. */
import http2 from 'node:http2';
import { expect } from 'chai';
import { Codec } from '../../lib/wire/codec.js';
import { FrameDecoder, FrameType, encodeFrame } from '../../lib/wire/frames.js';

const codec = new Codec();

export interface Frame {
  type: number;
  payload: Buffer;
}

/** The complete frames in `bytes`, in order (a partial last frame is left out). */
export function framesOf(bytes: Buffer): Frame[] {
  const out: Frame[] = [];
  new FrameDecoder((type, payload) => out.push({ type, payload: Buffer.from(payload) })).push(bytes);
  return out;
}

/** One HTTP/2 stream of a raw client: what came back (headers, bytes, frames) and how it ended. */
export class RawStream {
  readonly response: Promise<http2.IncomingHttpHeaders>;
  readonly closed: Promise<void>;
  /** The server ended its side cleanly (END_STREAM), as opposed to resetting the stream. */
  endedByPeer = false;
  private readonly chunks: Buffer[] = [];

  constructor(readonly stream: http2.ClientHttp2Stream) {
    // a RST_STREAM with an error code surfaces as 'error'; rstCode tells it afterwards
    stream.on('error', () => undefined);
    stream.on('data', (chunk: Buffer) => this.chunks.push(chunk));
    stream.on('end', () => {
      if (!stream.rstCode) this.endedByPeer = true;
    });
    this.response = new Promise((resolve, reject) => {
      stream.once('response', resolve);
      stream.once('close', () => reject(new Error('stream closed before a response')));
    });
    this.response.catch(() => undefined);
    this.closed = new Promise((resolve) => stream.once('close', () => resolve()));
  }

  /** The response's `:status`. */
  async status(): Promise<number> {
    return Number((await this.response)[':status']);
  }

  get rstCode(): number {
    return this.stream.rstCode;
  }

  get body(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** The complete frames received so far. */
  frames(): Frame[] {
    return framesOf(this.body);
  }

  values(): unknown[] {
    return this.frames()
      .filter((f) => f.type === FrameType.VALUE)
      .map((f) => codec.decode(f.payload));
  }

  send(type: number, payload: Uint8Array): void {
    this.stream.write(encodeFrame(type, payload));
  }

  sendBytes(bytes: Uint8Array): void {
    this.stream.write(bytes);
  }

  /** Asserts a 200 and returns the response headers. */
  async opened(): Promise<http2.IncomingHttpHeaders> {
    const headers = await this.response;
    expect(headers[':status'], String(headers['netchan-error'])).to.equal(200);
    return headers;
  }
}
