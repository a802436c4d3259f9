/** Assertion helpers shared by the test files. */
import { expect } from 'chai';
import { NetchanError } from '../../lib/core/errors.js';

/** Awaits `p`, expects it to reject with a NetchanError, and returns that error. */
export async function rejection(p: Promise<unknown>): Promise<NetchanError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(NetchanError);
    return err as NetchanError;
  }
  throw new Error('expected a rejection');
}

/** Follows a promise without awaiting it: `done`, and the value or error once it settled. */
export function track<T>(p: Promise<T>): { done: boolean; value?: T; error?: unknown } {
  const state: { done: boolean; value?: T; error?: unknown } = { done: false };
  p.then(
    (value) => Object.assign(state, { done: true, value }),
    (error: unknown) => Object.assign(state, { done: true, error }),
  );
  return state;
}
