/**
 * A browser's WebSocket as what carries a WebSocket mux (lib/transport/ws-mux.ts): the same
 * mux, frames and streams as a Node client's, over the page's `WebSocket`.
 */
import type { MuxCarrier } from '../transport/ws-mux.js';

/** Above this many bytes in the WebSocket's send buffer, the carrier watches it drain. */
const DRAIN_BYTES = 1024 * 1024;
/** How often a congested WebSocket's buffer is looked at: the browser has no drain event. */
const DRAIN_POLL_MS = 10;

type Listener = (...args: never[]) => void;

/** The few things of a `ws` WebSocket a mux uses, made of a browser `WebSocket`. */
export class BrowserCarrier implements MuxCarrier {
  private readonly drainListeners: (() => void)[] = [];
  private drainTimer: ReturnType<typeof setInterval> | undefined;
  /** What the mux asks for its drain events; a browser has no socket under the WebSocket. */
  readonly _socket = { on: (_event: 'drain', fn: () => void) => void this.drainListeners.push(fn) };

  constructor(private readonly ws: WebSocket) {
    ws.binaryType = 'arraybuffer';
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  get readyState(): number {
    return this.ws.readyState;
  }

  send(data: Uint8Array): void {
    this.ws.send(data as Uint8Array<ArrayBuffer>);
    if (this.drainTimer === undefined && this.ws.bufferedAmount > DRAIN_BYTES) {
      this.drainTimer = setInterval(() => {
        if (this.ws.bufferedAmount > DRAIN_BYTES && this.ws.readyState === WebSocket.OPEN) return;
        clearInterval(this.drainTimer);
        this.drainTimer = undefined;
        for (const fn of this.drainListeners) fn();
      }, DRAIN_POLL_MS);
    }
  }

  close(code: number, reason: string): void {
    // a page may close with 1000 or 3000–4999 only; the peer learns the rest from the reason
    try {
      this.ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason);
    } catch {
      this.ws.close();
    }
  }

  /** A page cannot drop a connection: it closes it, and the mux treats it as gone at once. */
  terminate(): void {
    this.ws.close();
    clearInterval(this.drainTimer);
  }

  on(event: 'message' | 'close' | 'error', listener: Listener): this {
    if (event === 'message') {
      const onMessage = listener as (data: Buffer, isBinary: boolean) => void;
      this.ws.addEventListener('message', (e: MessageEvent) => {
        if (typeof e.data === 'string') onMessage(Buffer.from(e.data), false);
        else onMessage(Buffer.from(e.data as ArrayBuffer), true);
      });
    } else if (event === 'close') {
      this.ws.addEventListener('close', () => {
        clearInterval(this.drainTimer);
        (listener as () => void)();
      });
    } else {
      this.ws.addEventListener('error', () => (listener as (err: Error) => void)(new Error('WebSocket error')));
    }
    return this;
  }
}
