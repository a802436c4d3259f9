/**
 * Resetting and destroying streams and HTTP/2 sessions from wherever the code happens to run.
 *
 * JavaScript runs inside nghttp2's receive: every event of an HTTP/2 stream or session, and the
 * nextTicks and promise continuations that follow it, run before `nghttp2_session_mem_recv`
 * returns. Node 20 writes an RST_STREAM at once (`nghttp2_session_mem_send`) for every code but
 * CANCEL, from there too, and so does an HTTP/2 session's `destroy()` (its GOAWAY, and a reset
 * for every open stream). nghttp2 entered again that way can close and free a stream it is in
 * the middle of closing: the process aborts (`CheckAllocatedSize`, a double free). Node fixed
 * that later (nodejs/node#64113, #64166); Node 20 has it. A CANCEL asked for inside the receive
 * Node holds back only if the receive opened the session's write scope, which it does not when a
 * write was already scheduled as it began (the turn before wrote something): then it writes at
 * once as well. From inside the close of a stream the peer reset, that write can send this
 * side's queued RST_STREAM for the same stream (nghttp2 frees it twice), or ask Node for DATA of
 * that stream, which Node has already let go: 0 bytes and no end, and nghttp2 writes empty DATA
 * frames forever.
 *
 * So: an open stream is reset, with any code, or destroyed with an error, from the next turn
 * (setImmediate: outside any receive); a stream nghttp2 has closed or is closing gets no reset
 * of ours, and its local end waits for the next turn as well; a session is destroyed from the
 * next turn. Only the HTTP/2 adapter (lib/transport/http2.ts) uses this: the WebSocket mux and
 * the in-memory transport have no such re-entry.
 */
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = http2.constants;

/** The parts of Node's `Http2Stream` this module reads. */
interface H2Stream extends Duplex {
  close(code?: number): void;
  /** Closed by RST_STREAM (sent, asked for, or received) or by both sides ending. */
  readonly closed: boolean;
  readonly session?: { readonly destroyed: boolean } | undefined;
}

function isHttp2Stream(stream: Duplex): stream is H2Stream {
  // Node's Http2Stream (no class to check against is exported): a stream of a session
  return typeof (stream as Partial<H2Stream>).close === 'function' && 'session' in stream && 'rstCode' in stream;
}

/**
 * Whether `stream.destroy()` would make Node write an RST_STREAM at once: an HTTP/2 stream that
 * is not closed yet, of a session not destroyed (destroying the session destroys its streams).
 */
function resetWouldBeWritten(stream: Duplex): boolean {
  if (stream.destroyed || !isHttp2Stream(stream) || stream.closed) return false;
  const session = stream.session;
  return session !== undefined && !session.destroyed;
}

/** True while a deferred reset runs: outside any receive, so {@link guardDestroy} lets it through. */
let deferredTurn = false;

/** Runs `fn` on the next turn if the stream still needs it. */
function nextTurn(stream: Duplex, fn: () => void): void {
  setImmediate(() => {
    if (stream.destroyed) return;
    deferredTurn = true;
    try {
      fn();
    } finally {
      deferredTurn = false;
    }
  });
}

/**
 * Resets `stream`: RST_STREAM with CANCEL, or with `code`; with an error, `stream.destroy(error)`
 * (RST_STREAM INTERNAL_ERROR on HTTP/2, the error for the local side). Safe from anywhere,
 * including inside nghttp2's receive; a stream already destroyed is left alone.
 */
export function resetStream(stream: Duplex, error?: Error, code?: number): void {
  if (stream.destroyed) return;
  if (!isHttp2Stream(stream)) {
    stream.destroy(error);
    return;
  }
  // the stream went with its session
  if (stream.session === undefined) return;
  if (!resetWouldBeWritten(stream)) {
    // nghttp2 closed the stream or is closing it (or its session is going): no reset of ours
    nextTurn(stream, () => stream.destroy(error));
    return;
  }
  nextTurn(stream, () => {
    const rst = code ?? (error ? undefined : NGHTTP2_CANCEL);
    if (rst !== undefined && !stream.closed) closeWritten(stream, rst);
    if (error) stream.destroy(error);
  });
}

/**
 * `stream.close(code)`, except that a NO_ERROR reset of a stream whose writable side has ended
 * but not finished (its last DATA waits on the peer's window) waits for 'finish' here, the
 * stream still open. Node would mark the stream closed at once and write the RST_STREAM only at
 * 'finish': a destroy meanwhile (a second reset, its session ending) writes none and frees
 * Node's side of the stream while nghttp2 keeps it open with DATA to send. At the peer's next
 * WINDOW_UPDATE nghttp2 asks for that DATA, Node finds no stream and answers 0 bytes without an
 * end, and nghttp2 writes empty DATA frames forever: the process spins in SendPendingData.
 * Left open, the stream is reset (and destroyable) like any other meanwhile.
 */
function closeWritten(stream: H2Stream, code: number): void {
  if (code !== NGHTTP2_NO_ERROR || !stream.writableEnded || stream.writableFinished) {
    stream.close(code);
    return;
  }
  stream.once('finish', () => resetStream(stream, undefined, code));
}

/**
 * Makes `stream.destroy` safe from anywhere, for a stream the program (or a pipeline) may
 * destroy: on an open HTTP/2 stream of a live session, the destroy (and so its RST_STREAM)
 * happens on the next turn. Node's own destroys (of a closed stream, or by a destroyed session)
 * go through at once, unchanged. (Closing with CANCEL and destroying at once instead left a
 * gateway tunnel's process unable to exit: not pursued.)
 */
export function guardDestroy(stream: Duplex): void {
  if (!isHttp2Stream(stream)) return;
  const wire = stream as H2Stream & { destroy(error?: Error, callback?: unknown): H2Stream };
  const destroy = wire.destroy;
  wire.destroy = function (error?: Error, callback?: unknown) {
    if (!deferredTurn && resetWouldBeWritten(this)) {
      nextTurn(this, () => destroy.call(this, error, callback));
      return this;
    }
    return destroy.call(this, error, callback);
  };
}

/** The parts of an HTTP/2 session (or a WebSocket mux) this module uses. */
interface DestroyableSession {
  readonly destroyed: boolean;
  destroy(): void;
}

/** Destroys an HTTP/2 session (or a WebSocket mux) from the next turn, outside nghttp2's receive. */
export function destroySession(session: DestroyableSession): void {
  if (session.destroyed) return;
  setImmediate(() => {
    if (!session.destroyed) session.destroy();
  });
}
