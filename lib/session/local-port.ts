/**
 * The owner port on a local {@link Channel}: the peer's values enter it as a sender would, and
 * the peer's receives wait in it as a receiver would, both as `select` waits: a {@link Waiter}
 * parked in the channel's wait lists, completed synchronously when it is served, with no promise
 * per value. A parked waiter can also be withdrawn from the list at any time, which is what
 * the stream needs when it goes: values the peer sent and no one took yet are withdrawn, since
 * they were never acknowledged.
 *
 * The wait lists are private to the Channel; this reaches them through `channelWaits()`, the
 * one internal interface core/channel.ts has for this (offer, canTake, take, park). Everything
 * else it uses is the Channel's documented API: `returnValue` and `closeReason` among it.
 */
import { Waiter, channelWaits, type Channel, type Completion } from '../core/channel.js';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import { Deque } from '../core/queue.js';
import { NOTHING, type OwnerPort, type PortListener } from './owner-port.js';

export class LocalPort implements OwnerPort, Completion {
  private readonly waits = channelWaits();
  /** The peer's values parked as waiting senders, first first: the channel serves them in that order. */
  private readonly parked = new Deque<Waiter>();
  private receiver: Waiter | null = null;
  /**
   * On a rendezvous channel, the senders whose values went to the peer, in the order they went
   * (null for a value that had no sender waiting: one returned to the channel): each completes
   * when the peer's ACK says its program took the value (docs/PROTOCOL.md §5.2).
   */
  private readonly held: Deque<Waiter | null> | null;
  /** See {@link Completion.holdsSends}: a rendezvous channel's sends wait for the peer's program. */
  readonly holdsSends: boolean;

  constructor(
    private readonly channel: Channel<unknown>,
    private readonly listener: PortListener,
  ) {
    this.holdsSends = channel.capacity === 0;
    this.held = this.holdsSends ? new Deque<Waiter | null>() : null;
  }

  get capacity(): number {
    return this.channel.capacity;
  }

  get closed(): boolean {
    return this.channel.closed;
  }

  get closeReason(): Error | undefined {
    return this.channel.closeReason;
  }

  get drained(): boolean {
    return this.channel.closed && !this.waits.canTake(this.channel);
  }

  get waiting(): boolean {
    return this.receiver !== null;
  }

  close(error?: Error): void {
    this.channel.close(error);
  }

  onClose(listener: (error: Error | undefined) => void): () => void {
    if (this.held === null) return this.channel.onClose(listener);
    return this.channel.onClose((error) => {
      this.closeHeld(error);
      listener(error);
    });
  }

  /**
   * The channel closed: senders whose values the peer holds stop waiting, as senders waiting in
   * the channel do, with `mayHaveBeenDelivered` (the peer's program may still take the value).
   * Their places stay, so that the peer's ACKs still line up.
   */
  private closeHeld(error: Error | undefined): void {
    const held = this.held as Deque<Waiter | null>;
    let err: NetchanError | undefined;
    for (let i = held.length; i > 0; i--) {
      const sender = held.shift();
      if (sender) sender.owner.fail(sender, (err ??= netchanError(ErrorCodes.CHANNEL_CLOSED, 'channel is closed', { cause: error, mayHaveBeenDelivered: true })));
      held.push(null);
    }
  }

  refuse(value: unknown, error: Error): void {
    const sender = this.held !== null && this.held.length > 0 ? this.held.pop() : null;
    if (sender) sender.owner.fail(sender, error);
    else this.channel.returnValue(value);
  }

  give(value: unknown): boolean {
    // behind values of the peer already parked, this one waits its turn: order holds whatever room opens
    if (this.parked.length === 0 && this.waits.offer(this.channel, value)) return true;
    const waiter = new Waiter(value, this, 0, true);
    this.parked.push(waiter);
    this.waits.park(this.channel, waiter);
    return false;
  }

  tryTake(): unknown {
    const held = this.held;
    if (held !== null) {
      const sender = this.waits.hold(this.channel);
      if (sender !== null) {
        held.push(sender);
        return sender.value;
      }
      if (!this.waits.canTake(this.channel)) return NOTHING;
      held.push(null);
      return this.waits.take(this.channel);
    }
    return this.waits.canTake(this.channel) ? this.waits.take(this.channel) : NOTHING;
  }

  delivered(n: number): void {
    const held = this.held;
    if (held === null) return;
    for (let i = 0; i < n && held.length > 0; i++) {
      const sender = held.shift();
      sender?.owner.complete(sender, undefined, true);
    }
  }

  awaitValue(): void {
    this.receiver = new Waiter(undefined, this, 0, false);
    this.waits.park(this.channel, this.receiver);
  }

  putBack(value: unknown): void {
    const sender = this.held !== null && this.held.length > 0 ? this.held.pop() : null;
    // a held sender waits again, first in line; a value with none goes back to the buffer
    if (sender) this.waits.unhold(this.channel, sender);
    else this.channel.returnValue(value);
  }

  detach(): void {
    if (this.receiver) {
      this.receiver.list?.remove(this.receiver);
      this.receiver = null;
    }
    while (this.parked.length > 0) {
      const w = this.parked.shift();
      w.list?.remove(w);
    }
  }

  /** The channel served a waiter of this port. @internal */
  complete(waiter: Waiter, value: unknown, ok: boolean): void {
    if (waiter.sending) {
      this.parked.shift();
      this.listener.given();
      return;
    }
    this.receiver = null;
    if (ok) {
      this.held?.push(null);
      this.listener.taken(value);
    } else {
      this.listener.exhausted();
    }
  }

  /** A sender of the rendezvous channel gave its value to the peer's receive: held till the ACK. @internal */
  completeHeld(_waiter: Waiter, sender: Waiter): void {
    this.receiver = null;
    (this.held as Deque<Waiter | null>).push(sender);
    this.listener.taken(sender.value);
  }

  /** The channel closed with a value of the peer parked: refused, and the CLOSE says so. @internal */
  fail(waiter: Waiter): void {
    if (waiter.sending) this.parked.shift();
    else this.receiver = null;
  }
}
