/** Watchers for the hardening tests: how long the event loop stalled, and the peak of a gauge. */
import { performance } from 'node:perf_hooks';
import type { ChannelLike } from '../../lib/index.js';
import { expect } from 'chai';
import { onTeardown } from './net.js';

/** The largest gap between ticks of a 10 ms interval: how long the event loop was blocked. */
export function watchLoop(): { maxGapMs(): number } {
  let last = performance.now();
  let max = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    max = Math.max(max, now - last);
    last = now;
  }, 10);
  onTeardown(() => clearInterval(timer));
  return { maxGapMs: () => Math.max(max, performance.now() - last) };
}

/** Samples `measure` every 5 ms (and on demand): the largest value it returned. */
export function watchMax(measure: () => number): { max(): number } {
  let max = measure();
  const timer = setInterval(() => (max = Math.max(max, measure())), 5);
  onTeardown(() => clearInterval(timer));
  return { max: () => (max = Math.max(max, measure())) };
}

/**
 * Sends `values` both ways at once, client → server on `upHandle`/`up` and server → client on
 * `down`/`downHandle`, and checks that each side received them all, in order.
 */
export async function exchangeBothWays(
  values: number[],
  up: { handle: ChannelLike<number>; channel: ChannelLike<number> },
  down: { handle: ChannelLike<number>; channel: ChannelLike<number> },
): Promise<void> {
  const atServer: number[] = [];
  const atClient: number[] = [];
  await Promise.all([
    (async () => {
      for (const v of values) await up.handle.send(v);
    })(),
    (async () => {
      for (let i = 0; i < values.length; i++) atServer.push(await up.channel.receive());
    })(),
    (async () => {
      for (const v of values) await down.channel.send(v);
    })(),
    (async () => {
      for (let i = 0; i < values.length; i++) atClient.push(await down.handle.receive());
    })(),
  ]);
  expect(atServer).to.deep.equal(values);
  expect(atClient).to.deep.equal(values);
}
