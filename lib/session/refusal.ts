/**
 * Refusing a stream (docs/PROTOCOL.md §4.4): a non-200 answer with the error code and a message,
 * and a short text body, then the stream is let go.
 */
import type { ServerWireStream } from '../transport/contract.js';
import { publish } from '../core/diagnostics.js';
import { Headers, header, refusalBody, refusalHeaders } from '../wire/headers.js';

/**
 * Answers `stream` with `status` and the refusal `code`, and lets it go. A client may never end
 * its side of a refused stream, which would keep it open on the server for the life of the
 * connection: once the answer is out, the stream is reset with `done` (RST_STREAM NO_ERROR after
 * END_STREAM, RFC 9113 §8.1; a mux RESET after END, a release, §7.2).
 */
export function refuse(stream: ServerWireStream, status: number, code: string, message: string): void {
  if (stream.gone) return;
  publish('streamRefused', () => ({
    status,
    code,
    message,
    sessionId: header(stream.headers, Headers.session),
    kind: header(stream.headers, Headers.kind),
    remoteAddress: stream.peer.remoteAddress,
  }));
  stream.respond(status, refusalHeaders(code, message));
  stream.bytes.end(refusalBody(code, message));
  stream.bytes.resume();
  // from the next turn: the answer is written first (on HTTP/2 a reset other than CANCEL is
  // deferred anyway, lib/transport/stream-reset.ts)
  setImmediate(() => stream.reset('done'));
}
