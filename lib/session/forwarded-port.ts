/**
 * The owner port on a remote handle that this session forwards: a value received from one
 * session's peer carried a handle on a channel another session holds, and this side now serves
 * that handle to its own peer. The handle's public operations are used, each a promise
 * (forwarding is not the hot path), but for receives: a value received to forward is lent, and
 * acknowledged to the handle's owner only once this side's peer took it, so that one the peer
 * never took goes back (exactly once through a forwarder too).
 */
import { ErrorCodes, NetchanError } from '../core/errors.js';
import { NOTHING, type OwnerPort, type PortListener } from './owner-port.js';
import type { RemoteChannel } from './remote-channel.js';

const RESOLVED: Promise<void> = Promise.resolve();
const ignore = (): undefined => undefined;

export class ForwardedPort implements OwnerPort {
  /** The sends so far, acknowledged in the order they were made even if they settle out of it. */
  private sends: Promise<void> = RESOLVED;
  private receiving: AbortController | null = null;
  private reason: Error | undefined;
  private readonly onSent = (): void => this.listener.given();
  private readonly onValue = (value: unknown): void => {
    this.receiving = null;
    this.listener.taken(value);
  };
  private readonly onNoValue = (err: unknown): void => {
    this.receiving = null;
    if (err instanceof NetchanError && err.code === ErrorCodes.CHANNEL_CLOSED) this.listener.exhausted();
  };

  constructor(
    private readonly handle: RemoteChannel<unknown>,
    private readonly listener: PortListener,
  ) {}

  get capacity(): number {
    return this.handle.capacity;
  }

  get closed(): boolean {
    return this.handle.closed;
  }

  get closeReason(): Error | undefined {
    return this.reason;
  }

  /** A handle closed may still have values on their way to it: only a receive knows it is drained. */
  get drained(): boolean {
    return false;
  }

  get waiting(): boolean {
    return this.receiving !== null;
  }

  close(error?: Error): void {
    this.handle.close(error);
  }

  onClose(listener: (error: Error | undefined) => void): () => void {
    return this.handle.onClose((error) => {
      this.reason = error;
      listener(error);
    });
  }

  give(value: unknown): boolean {
    const sent = this.handle.send(value);
    this.sends = this.sends.then(() => sent.then(this.onSent, ignore));
    return false;
  }

  /** Values are taken by {@link awaitValue}, one receive each. */
  tryTake(): unknown {
    return NOTHING;
  }

  awaitValue(): void {
    const receiving = new AbortController();
    this.receiving = receiving;
    this.handle.lend(receiving.signal).then(this.onValue, this.onNoValue);
  }

  /**
   * The value goes back to the handle, first in line: it was lent (lib/session/remote-endpoint.ts),
   * so the handle's owner has not had its ACK and gets it back if the handle goes.
   */
  putBack(value: unknown): void {
    this.handle.returnLent(value);
  }

  /** A value this side's peer cannot take goes back to the handle (this stream fails). */
  refuse(value: unknown): void {
    this.handle.returnLent(value);
  }

  /** This side's peer took them: now the handle acknowledges them to its owner. */
  delivered(n: number): void {
    this.handle.confirmLent(n);
  }

  detach(): void {
    this.receiving?.abort();
    this.receiving = null;
  }
}
