/**
 * What a server session keeps between a value and the streams it names (docs/PROTOCOL.md §4.2):
 * the streams its client exported, until the value that names them is decoded, and the
 * references the server sent, until the client opens their streams. Both are bounded in time;
 * what is never claimed is let go.
 */
import type { Duplex } from 'node:stream';
import { PassThrough } from 'node:stream';
import { debug } from '../core/debug.js';
import { ErrorCodes, netchanError } from '../core/errors.js';
import type { ReferenceKind } from '../wire/codec.js';
import type { ServerWireStream } from '../transport/contract.js';
import type { RemoteEndpoint } from '../session/channel-stream.js';
import type { BytesMode } from '../session/session.js';
import type { Stats } from '../session/stream-context.js';

/** A stream the client exported, waiting for the value that names it. */
interface Unclaimed {
  kind: ReferenceKind;
  /** What the value that names it gets: a remote endpoint, or the byte stream's Duplex. */
  obj: object;
  mode?: BytesMode;
  /** A byte stream's wire, to reset it when no value claims it. */
  wire?: ServerWireStream;
  timer: NodeJS.Timeout;
}

/** Exported streams refused over a limit remembered at most, with why. */
const REFUSED_KEPT = 1024;

/** The streams a client exported whose reference no value named yet. */
export class ClientExports {
  /** Made at the first export: most sessions never have one. */
  private unclaimed: Map<string, Unclaimed> | null = null;
  /** Exported streams refused over a limit (the most recent ones), with why. */
  private refused: Map<string, string> | null = null;

  constructor(
    private readonly sessionId: string,
    private readonly timeoutMs: number,
  ) {}

  has(sid: string): boolean {
    return this.unclaimed?.has(sid) ?? false;
  }

  /**
   * Keeps an exported stream until a value names it. Not forgotten when the stream closes: a
   * short byte stream can be complete (and closed by HTTP/2) before its value is decoded, with
   * its bytes still buffered; a channel can be closed with values still to drain.
   */
  add(sid: string, kind: ReferenceKind, obj: object, mode?: BytesMode, wire?: ServerWireStream): void {
    // the timer is made elsewhere: a closure made here would keep `obj` (and what it buffered)
    const u: Unclaimed = { kind, obj, mode, wire, timer: this.timer(sid) };
    (this.unclaimed ??= new Map()).set(sid, u);
    if (kind === 'bytes') (obj as Duplex).once('close', () => this.closed(sid, u));
  }

  /** An exported stream was refused (over a limit): a value that names it fails with `message`. */
  refuse(sid: string, message: string): void {
    const refused = (this.refused ??= new Map());
    if (refused.size >= REFUSED_KEPT) refused.delete(refused.keys().next().value as string);
    refused.set(sid, message);
  }

  /**
   * Whether the client's export `id` is here to be claimed as `kind` (false: its stream may still
   * arrive). Throws for one refused, or of another kind or mode.
   */
  present(kind: ReferenceKind, id: string, mode: BytesMode | undefined): boolean {
    const u = this.unclaimed?.get(id);
    if (!u) {
      const refused = this.refused?.get(id);
      if (refused !== undefined) throw netchanError(ErrorCodes.LIMIT, `stream ${id} was refused: ${refused}`);
      return false;
    }
    if (u.kind !== kind || u.mode !== mode) {
      throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, `stream ${id} is not a ${kind === 'channel' ? 'channel' : `byte stream of mode ${mode}`}`);
    }
    return true;
  }

  /** Takes an exported stream for the value naming it (checked {@link present} before). */
  claim(id: string): object {
    const u = this.unclaimed?.get(id);
    if (!u) throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, `no exported stream ${id} in this session`);
    this.unclaimed?.delete(id);
    this.refused?.delete(id);
    clearTimeout(u.timer);
    return u.obj;
  }

  /** Lets every unclaimed export go (the session ends). */
  clear(): void {
    for (const u of this.unclaimed?.values() ?? []) drop(u);
    this.unclaimed = null;
  }

  private timer(sid: string): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const u = this.unclaimed?.get(sid);
      if (!u) return;
      this.unclaimed?.delete(sid);
      debug('session %s: exported stream %s never named by a value, dropped', this.sessionId, sid);
      drop(u);
    }, this.timeoutMs);
    timer.unref();
    return timer;
  }

  /**
   * An exported byte stream closed before a value named it. Reset or failed, what it buffered can
   * never be read (a destroyed stream hands out nothing), so it goes now, not at the reference
   * timeout: a closed stream no longer counts toward maxByteStreamsPerSession, and kept whole, the
   * exports a client resets would have the server hold their buffers with no bound but that
   * timeout. The value that names it still gets a stream failed with the same error.
   */
  private closed(sid: string, u: Unclaimed): void {
    if (this.unclaimed?.get(sid) !== u) return;
    // the wire is closed: nothing to reset, and it would keep its connection's state alive
    u.wire = undefined;
    const bytes = u.obj as Duplex;
    if (!bytes.errored) return;
    const failed = new PassThrough();
    failed.on('error', (err) => debug('byte stream error: %s', err.message));
    failed.destroy(bytes.errored);
    u.obj = failed;
  }
}

function drop(u: Unclaimed): void {
  clearTimeout(u.timer);
  if (u.kind === 'channel') (u.obj as RemoteEndpoint).release();
  else u.wire?.reset();
}

/** A channel or stream the server put in a value, waiting for the client to open its stream. */
export interface PendingExport {
  kind: ReferenceKind;
  obj: object;
  mode?: BytesMode;
  timer: NodeJS.Timeout;
}

/** The references the server sent whose streams the client has not opened yet. */
export class ServerExports {
  /** Made at the first reference sent. */
  private pending: Map<string, PendingExport> | null = null;

  constructor(
    private readonly sessionId: string,
    private readonly timeoutMs: number,
    private readonly counters: Stats,
  ) {}

  add(id: string, kind: ReferenceKind, obj: object, mode?: BytesMode): void {
    const timer = setTimeout(() => {
      if (this.pending?.delete(id)) {
        this.counters.pendingReferences--;
        debug('session %s: reference %s never opened, dropped', this.sessionId, id);
        if (kind === 'bytes') (obj as Duplex).destroy?.(netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'byte-stream reference never opened'));
      }
    }, this.timeoutMs);
    timer.unref();
    (this.pending ??= new Map()).set(id, { kind, obj, mode, timer });
    this.counters.pendingReferences++;
  }

  /** Takes reference `ref` for the stream the client opened for it, if it is one of `kind`. */
  take(ref: string, kind: ReferenceKind): PendingExport | undefined {
    const p = this.pending?.get(ref);
    if (!p || p.kind !== kind) return undefined;
    this.pending?.delete(ref);
    this.counters.pendingReferences--;
    clearTimeout(p.timer);
    return p;
  }

  /** Forgets every pending reference (the session ends). */
  clear(): void {
    if (!this.pending) return;
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.counters.pendingReferences -= this.pending.size;
    this.pending = null;
  }
}
