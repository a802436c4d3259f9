/**
 * References inside values (docs/PROTOCOL.md §4.2, §5.1, §6.1): how one is read, what encoding
 * one commits a session to, and the values that wait for the streams their references name.
 */
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';
import type { ReferenceKind } from '../wire/codec.js';
import type { BytesMode } from './byte-streams.js';

/** A reference as a value carries it (docs/PROTOCOL.md §5.1, §6.1). */
export type ParsedReference =
  | { back: string }
  | { back?: undefined; owner: 'c' | 's'; id: string; mode?: BytesMode };

/** Reads a reference's payload, or throws ERR_DECODE. */
export function parseReference(kind: ReferenceKind, data: Record<string, unknown>): ParsedReference {
  if (kind === 'channel' && typeof data.b === 'string') return { back: data.b };
  const id = data.id;
  const owner = data.o;
  if (typeof id !== 'string' || id.length === 0 || id.length > 64 || (owner !== 'c' && owner !== 's')) {
    throw netchanError(ErrorCodes.DECODE, 'malformed reference');
  }
  if (kind === 'channel') return { owner, id };
  const mode = data.m;
  if (mode !== 'r' && mode !== 'w' && mode !== 'd') throw netchanError(ErrorCodes.DECODE, 'malformed byte-stream reference mode');
  return { owner, id, mode };
}

/**
 * What encoding one channel or byte stream commits the session to. Nothing of it happens while
 * the value is encoded: only once the whole value is known to be sendable (encoded, within the
 * size limits) are the exports opened, and only once all of them opened do bytes start to flow.
 */
export interface ExportPlan {
  /** The reference the value carries. */
  ref: Record<string, unknown>;
  /** Opens what the reference needs (its stream, its pending entry); nothing flows yet. */
  open?(): void;
  /** Takes `open` back when a later export of the same value could not open. */
  undo?(): void;
  /** Starts the flow (a byte stream's pipeline), once every export of the value opened. */
  start?(): void;
}

/**
 * Opens the exports of one value, then starts them: if one cannot open, those opened before it
 * are taken back before anything flowed, and the error is thrown (the value is not sent).
 */
export function openExports(plans: ExportPlan[]): void {
  let opened = 0;
  try {
    for (; opened < plans.length; opened++) plans[opened]!.open?.();
  } catch (err) {
    for (let i = 0; i < opened; i++) plans[i]!.undo?.();
    throw fromNodeError(err);
  }
  for (const plan of plans) plan.start?.();
}

/** A value waiting for the streams of its references: woken once every one of them arrived. */
interface PendingWait {
  missing: Set<string>;
  resolve: () => void;
  reject: (err: NetchanError) => void;
  timer: NodeJS.Timeout;
}

/**
 * The values of a session that wait for the streams their references name, by the stream id
 * each still misses. A value is woken once every one arrived (or one was refused), and fails
 * with ERR_UNKNOWN_REFERENCE after the timeout.
 */
export class ReferenceWaits {
  /** Made at the first wait: most sessions' values never wait. */
  private waits: Map<string, Set<PendingWait>> | null = null;

  constructor(
    private readonly timeoutMs: number,
    /** Most stream ids the values may wait for at once; more is ERR_LIMIT. */
    private readonly maxWaiting: () => number,
  ) {}

  /** A promise that settles once every one of `keys` is announced (or the wait failed); throws ERR_LIMIT. */
  waitFor(keys: readonly string[]): Promise<void> {
    const waits = (this.waits ??= new Map());
    let fresh = 0;
    for (const key of keys) if (!waits.has(key)) fresh++;
    const max = this.maxWaiting();
    if (waits.size + fresh > max) {
      throw netchanError(ErrorCodes.LIMIT, `values of this session would wait for more than ${max} streams at once`);
    }
    return new Promise<void>((resolve, reject) => {
      const wait: PendingWait = { missing: new Set(keys), resolve, reject, timer: undefined as unknown as NodeJS.Timeout };
      wait.timer = setTimeout(() => {
        for (const key of wait.missing) this.unwait(key, wait);
        reject(netchanError(ErrorCodes.UNKNOWN_REFERENCE, `referenced stream${wait.missing.size > 1 ? 's' : ''} ${[...wait.missing].join(', ')} did not arrive within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      wait.timer.unref?.(); // a browser's timers have none
      for (const key of wait.missing) {
        let set = waits.get(key);
        if (!set) waits.set(key, (set = new Set()));
        set.add(wait);
      }
    });
  }

  /** The stream `key` arrived (or, `refused`, was refused): wakes the values waiting for it. */
  announce(key: string, refused: boolean): void {
    const set = this.waits?.get(key);
    if (!set) return;
    this.waits?.delete(key);
    for (const w of set) {
      w.missing.delete(key);
      if (w.missing.size > 0 && !refused) continue;
      for (const other of w.missing) this.unwait(other, w);
      clearTimeout(w.timer);
      w.resolve();
    }
  }

  /** Fails every waiting value with `error` (the session ends). */
  failAll(error: NetchanError): void {
    if (!this.waits) return;
    const waiting = new Set<PendingWait>();
    for (const set of this.waits.values()) for (const w of set) waiting.add(w);
    this.waits = null;
    for (const w of waiting) {
      clearTimeout(w.timer);
      w.reject(error);
    }
  }

  private unwait(key: string, wait: PendingWait): void {
    const set = this.waits?.get(key);
    if (!set) return;
    set.delete(wait);
    if (set.size === 0) this.waits?.delete(key);
  }
}
