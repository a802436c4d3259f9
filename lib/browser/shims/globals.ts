/**
 * The globals of Node that the shared layers use, for the browser bundle only (esbuild `inject`:
 * each free `Buffer`, `process` or `setImmediate` of the bundle refers to these, nothing is set on
 * the page's globals). `buffer` and `process` are the browser builds of Node's own modules that
 * `readable-stream` (Node's streams for browsers, by the Node.js project) depends on anyway.
 */
import { Buffer } from 'buffer';
// @ts-expect-error the browser build of `process` has no types; only esbuild reads this file
import process from 'process/browser.js';

/** A macrotask, as Node's: after the I/O already queued (a MessageChannel does not wait for timers' 4 ms clamp). */
function setImmediate(fn: (...args: unknown[]) => void, ...args: unknown[]): number {
  const channel = new MessageChannel();
  channel.port1.onmessage = () => {
    channel.port1.close();
    fn(...args);
  };
  channel.port2.postMessage(undefined);
  return 0;
}

export { Buffer, process, setImmediate };
