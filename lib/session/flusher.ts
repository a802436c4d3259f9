/**
 * One flush per event-loop turn for every stream of the process: frames written in a turn leave
 * together at its end, and receipts that ride along with nothing else leave a little later. One
 * flusher serves every session ({@link processFlusher}): a server with thousands of sessions
 * schedules one setImmediate per turn, not one per busy session, and an idle session holds none.
 */

/** What a {@link Flusher} flushes: a framed stream. */
export interface Flushable {
  /** In its Flusher's list for the end of this turn. */
  queued: boolean;
  /** In its Flusher's list of streams that owe a receipt soon. */
  lazyQueued: boolean;
  /** Frames came in that the peer has not had a receipt for. */
  readonly owesReceipt: boolean;
  /** The end of an event-loop turn: write what is pending. */
  endTurn(): void;
}

/**
 * Receipts (RCVD, docs/PROTOCOL.md §4.5) that ride along with nothing else go after this long:
 * each one written alone is an HTTP/2 DATA frame and a write, and the peer keeps what it sent
 * until confirmed.
 */
export const RECEIPT_DELAY_MS = 250;

/**
 * Batches the writes of many streams into one flush per event-loop turn (setImmediate), so that
 * a loop of `await send()` produces one write with many frames instead of one write per value.
 */
export class Flusher {
  private dirty: Flushable[] = [];
  private scheduled = false;
  private readonly run = (): void => {
    this.scheduled = false;
    const list = this.dirty;
    this.dirty = [];
    for (const fs of list) {
      fs.queued = false;
      fs.endTurn();
    }
  };

  mark(fs: Flushable): void {
    // called once per frame: a flag, not a Set lookup
    if (fs.queued) return;
    fs.queued = true;
    this.dirty.push(fs);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.run);
    }
  }

  private lazy: Flushable[] = [];
  private lazyTimer: NodeJS.Timeout | null = null;
  private readonly runLazy = (): void => {
    this.lazyTimer = null;
    const list = this.lazy;
    this.lazy = [];
    for (const fs of list) {
      fs.lazyQueued = false;
      if (fs.owesReceipt) this.mark(fs);
    }
  };

  /**
   * Flushes `fs` within {@link RECEIPT_DELAY_MS} unless something else does first: for receipts,
   * which otherwise ride along with the stream's own writes. One timer for every stream.
   */
  markLazy(fs: Flushable): void {
    if (fs.lazyQueued) return;
    fs.lazyQueued = true;
    this.lazy.push(fs);
    if (!this.lazyTimer) {
      this.lazyTimer = setTimeout(this.runLazy, RECEIPT_DELAY_MS);
      this.lazyTimer.unref?.(); // a browser's timers have none
    }
  }
}

/** The flusher of every session of this process. */
export const processFlusher = new Flusher();
