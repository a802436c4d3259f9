/**
 * A client session in a web page: the Node client's {@link Session}, with byte streams given to
 * the page as web streams and without what a page cannot do (TCP).
 */
import { ErrorCodes, netchanError } from '../core/errors.js';
import { Session } from '../client/client.js';
import type { Forwarder } from '../client/tunnel.js';
import type { BytesMode } from '../session/byte-streams.js';
import { webBytes } from '../session/web-streams.js';
import type { Duplex } from 'node:stream';

/**
 * A session from a web page, over the WebSocket fallback. The same channels, references, credits
 * and resumption as a Node session; a byte stream inside a received value is a web
 * `ReadableStream` (the server's Readable), `WritableStream` (its Writable) or
 * `{ readable, writable }` (a Duplex).
 */
export class BrowserSession extends Session {
  protected override importBytes(owner: 'c' | 's', id: string, mode: BytesMode): unknown {
    return webBytes(super.importBytes(owner, id, mode) as Duplex, mode);
  }

  /** Not in a browser: a page has no TCP. Rejects with ERR_INVALID_ARGUMENT. */
  override dialTcp(): Promise<Duplex> {
    return Promise.reject(netchanError(ErrorCodes.INVALID_ARGUMENT, 'dialTcp is not available in a browser'));
  }

  /** Not in a browser: a page cannot listen. Rejects with ERR_INVALID_ARGUMENT. */
  override forward(): Promise<Forwarder> {
    return Promise.reject(netchanError(ErrorCodes.INVALID_ARGUMENT, 'forward is not available in a browser'));
  }
}
