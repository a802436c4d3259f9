/**
 * What the owner's side of a channel stream (the exporter, lib/session/exporter.ts) asks of the
 * channel it serves to the peer. It serves two kinds: a local Channel
 * (lib/session/local-port.ts) and a remote handle of another session that this one forwards to
 * its own peer (lib/session/forwarded-port.ts). Behind this interface the exporter never asks
 * which: credits, acknowledgements and frames are the same for both.
 *
 * A port belongs to one exporter: a channel served on several streams has a port on each.
 */

/** What {@link OwnerPort.tryTake} returns when no value is at hand. */
export const NOTHING: unique symbol = Symbol('netchan.nothing');

/** The exporter, as its port calls it back: synchronously, from the channel's side. */
export interface PortListener {
  /** A value that {@link OwnerPort.give} could not hand over at once is in the channel now. */
  given(): void;
  /** The wait begun with {@link OwnerPort.awaitValue} got a value. */
  taken(value: unknown): void;
  /** The wait begun with {@link OwnerPort.awaitValue} ended with none: closed and drained. */
  exhausted(): void;
}

export interface OwnerPort {
  /** The channel's capacity: the credits granted to the peer follow from it. */
  readonly capacity: number;
  /** True once the channel is closed: values of the peer are refused from then on. */
  readonly closed: boolean;
  /** The error the channel was closed with, if any. */
  readonly closeReason: Error | undefined;
  /** Closed, and no value left to take that the port knows of without waiting. */
  readonly drained: boolean;
  /** True while a wait begun with {@link awaitValue} is on. */
  readonly waiting: boolean;
  /** The peer closed the channel. */
  close(error?: Error): void;
  /** Calls `listener` once when the channel closes; returns what removes it. */
  onClose(listener: (error: Error | undefined) => void): () => void;
  /**
   * Gives a value the peer sent. True if the channel took it at once; false if it waits for
   * room, in order behind those before it: `given` follows once it is in, or nothing when the
   * channel closes first (the peer learns of that from the CLOSE).
   */
  give(value: unknown): boolean;
  /** Takes a value for the peer if one is at hand, else returns {@link NOTHING}. */
  tryTake(): unknown;
  /** Waits for a value: `taken` or `exhausted` follows, once. One wait at a time. */
  awaitValue(): void;
  /**
   * Puts back a value that was taken for the peer but never reached its program, ahead of
   * everything waiting: values go back last first, so that they keep their order.
   */
  putBack(value: unknown): void;
  /**
   * The peer's ACK: its program took the next `n` values sent to it. A rendezvous channel's
   * senders of those values complete now.
   */
  delivered(n: number): void;
  /**
   * A value taken for the peer cannot be encoded: the last one taken. A rendezvous sender of it
   * rejects with `error` (it never left); a value with none goes back as {@link putBack}.
   */
  refuse(value: unknown, error: Error): void;
  /** The stream went: ends the wait, and withdraws the values that wait for room (unacknowledged). */
  detach(): void;
}

/**
 * A channel whose values live outside this process (a shared channel's backend): it makes the
 * owner port of each stream that serves it, as the exporter would make a {@link LocalPort} on a
 * local Channel.
 */
export interface PortSource {
  /** The channel's capacity: the credits granted to the peer follow from it. */
  readonly capacity: number;
  /** The port for one stream; `listener` is that stream's exporter. */
  openPort(listener: PortListener): OwnerPort;
}
