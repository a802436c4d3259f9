/**
 * Asks V8 for a full garbage collection, for sessions whose remote channel handles pile up.
 *
 * A handle the program dropped is released by a FinalizationRegistry (lib/session/remote-channel.ts),
 * which V8 runs only after a full collection. V8 schedules those by heap growth, and a dropped
 * handle's stream costs little heap but a place in the server's `maxChannelsPerSession`: the
 * README's request/reply pattern reached 4096 unreleased reply channels between two full
 * collections. So a session whose handles reach half the limit asks for one.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

let collect: (() => void) | null | undefined;
/** Full collections asked for, process-wide (for tests and the soak benchmark). @internal */
export const collections = { count: 0 };
/** Process-wide: no two collections asked for within this many milliseconds. */
const MIN_INTERVAL_MS = 100;
/**
 * And none until this many times the last one's duration has passed: whatever peers do (a client
 * can make a server hold many handles), forced collections take at most 1/20 of the process's time.
 */
const INTERVAL_PER_GC_MS = 20;
let nextAllowedAt = 0;

function collector(): (() => void) | null {
  if (collect !== undefined) return collect;
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === 'function') return (collect = exposed as () => void);
  try {
    // The gc function of a fresh context, without exposing it to the program's own contexts.
    v8.setFlagsFromString('--expose-gc');
    collect = vm.runInNewContext('gc') as () => void;
    v8.setFlagsFromString('--no-expose-gc');
  } catch {
    collect = null;
  }
  return collect;
}

/**
 * Runs a full collection unless one ran within the last {@link MIN_INTERVAL_MS}, or within
 * {@link INTERVAL_PER_GC_MS} times the duration of the last one. Says whether it ran.
 */
export function requestCollection(): boolean {
  const now = performance.now();
  if (now < nextAllowedAt) return false;
  const gc = collector();
  if (!gc) return false;
  collections.count++;
  gc();
  const took = performance.now() - now;
  nextAllowedAt = now + Math.max(MIN_INTERVAL_MS, took * INTERVAL_PER_GC_MS);
  return true;
}

/**
 * When to ask for a collection, for one session: once its remote handles reach half of
 * `limit`, then again after each further eighth (so that handles the program really holds cost
 * a few collections, not one per stream); back to half once they fall below it.
 */
export class CollectionTrigger {
  private next: number;

  constructor(private readonly limit: number) {
    this.next = Math.max(1, Math.floor(limit / 2));
  }

  /** `open`: remote handles of the session open now, counting the one being opened. */
  opened(open: number): void {
    if (open < this.next) return;
    // a collection refused for now (one ran too recently) is asked for again at the next open
    if (requestCollection()) this.next = open + Math.max(1, Math.floor(this.limit / 8));
  }

  closed(open: number): void {
    const half = Math.max(1, Math.floor(this.limit / 2));
    if (open < half) this.next = half;
  }
}
