/**
 * What a shared channel asks of NATS JetStream, in one place: the few calls it makes, typed here
 * so that the NATS client stays an optional peer dependency (loaded by `jetstream()` only) and
 * no type of it leaks into netchan's public API.
 */

/** A message pulled from the consumer. */
export interface PulledMessage {
  readonly data: Uint8Array;
  /** The stream sequence: the value's place in the channel. */
  readonly seq: number;
  ack(): void;
  ackAck(opts?: { timeout?: number }): Promise<boolean>;
  nak(millis?: number): void;
  working(): void;
  term(reason?: string): void;
}

/** The connection and the JetStream calls on it, as `jetstream()` made them. */
export interface Engine {
  /** Publishes to the channel's subject; resolves with the acknowledgement, rejects on failure. */
  publish(subject: string, data: Uint8Array, msgID: string, timeoutMs: number): Promise<{ duplicate: boolean }>;
  /** Makes the stream (or finds it) with these limits; resolves with the capacity it has. */
  ensureStream(stream: string, subject: string, capacity: number): Promise<number>;
  /** Makes the durable pull consumer the servers share (or finds it). */
  ensureConsumer(stream: string): Promise<void>;
  /** Pulls up to `max` messages, waiting at most `expiresMs` for them. */
  fetch(stream: string, max: number, expiresMs: number): Promise<AsyncIterable<PulledMessage>>;
  /** Values in the stream: published and not yet acknowledged by a receiver. */
  messages(stream: string): Promise<number>;
  /** The close marker of a channel, or null while it is open. */
  closeMarker(key: string): Promise<string | null>;
  /** Writes the close marker. */
  markClosed(key: string, marker: string): Promise<void>;
  /** Calls `onMarker` with the close marker once it is written (by any server); returns what stops watching. */
  watchClose(key: string, onMarker: (marker: string) => void): Promise<() => void>;
  /** Deletes the stream and the close marker. */
  remove(stream: string, key: string): Promise<void>;
  readonly ackWaitMs: number;
  /** Largest message NATS takes (its max_payload), headers included. */
  readonly maxPayload: number;
  /** Values a server pulls ahead of its receivers. */
  readonly prefetch: number;
  close(): Promise<void>;
}

/** True for the publish failure of a full stream (max_msgs reached, discard new): the sender waits for room. */
export function isStreamFull(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; api_error?: { err_code?: unknown } };
  return e?.code === 10077 || e?.api_error?.err_code === 10077 || (typeof e?.message === 'string' && e.message.includes('maximum messages exceeded'));
}
