/** What bench/soak.ts samples on each side: counters once they settle after a full collection. */
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Stats } from '../lib/index.js';

export interface Sample {
  streams: number;
  channels: number;
  byteStreams: number;
  pendingReferences: number;
  rssMB: number;
  heapUsedMB: number;
}

/** `global.gc` (node --expose-gc), or the same function taken from a fresh context. */
export function fullGc(): () => void {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === 'function') return exposed as () => void;
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  v8.setFlagsFromString('--no-expose-gc');
  return gc;
}

/**
 * Collects, lets the finalizers release dropped handles and their streams close (the peer ends
 * its side a round trip later), and samples once the counters have not moved for a second
 * (a thousand streams released at once took up to a second and a half to close on a loaded
 * machine).
 */
export async function settledSample(stats: () => Stats, timeoutMs = 10_000): Promise<Sample> {
  const gc = fullGc();
  const deadline = Date.now() + timeoutMs;
  let last = '';
  let stableSince = Date.now();
  let s = stats();
  for (;;) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
    s = stats();
    const key = `${s.streams}/${s.channels}/${s.byteStreams}/${s.pendingReferences}`;
    if (key !== last) {
      last = key;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= 1000 || Date.now() > deadline) break;
  }
  gc();
  const m = process.memoryUsage();
  return {
    streams: s.streams,
    channels: s.channels,
    byteStreams: s.byteStreams,
    pendingReferences: s.pendingReferences,
    rssMB: Math.round(m.rss / 1e5) / 10,
    heapUsedMB: Math.round(m.heapUsed / 1e5) / 10,
  };
}
