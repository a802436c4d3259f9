/**
 * Shared channels on NATS JetStream: several netchan servers serve one channel whose values live
 * in a JetStream work-queue stream (docs/cluster.md). The NATS client (`@nats-io/transport-node`,
 * `@nats-io/jetstream`, `@nats-io/kv`) is an optional peer dependency, imported when
 * {@link jetstream} is called and never before.
 */
import { ErrorCodes, netchanError } from '../core/errors.js';
import type { ChannelBackend } from '../server/server.js';
import type { Engine, PulledMessage } from './engine.js';
import { SharedChannel } from './shared-channel.js';

/** Options of {@link jetstream}. */
export interface JetStreamOptions {
  /** The NATS servers, e.g. `'nats://127.0.0.1:4222'` or the three of a cluster. */
  servers: string | string[];
  /**
   * How long JetStream waits for a value's acknowledgement before it gives the value to another
   * receiver, in ms. A server that holds a value for a client keeps extending it; a server that
   * dies stops, and its values go to other servers this long after. Default 30,000.
   */
  ackWaitMs?: number;
  /**
   * Values a server pulls ahead of its receivers, so that the next receive need not wait for a
   * pull: held by that server (unacknowledged) until a receiver takes them, given back when no
   * receiver asked for a second. Default 0.
   */
  prefetch?: number;
  /** Most values handed out and not yet acknowledged, over all servers (the consumer's max_ack_pending). Default 1024. */
  maxAckPending?: number;
  /** How long JetStream remembers a publish's message id, to drop a second publish of it, in ms. Default 120,000. */
  duplicateWindowMs?: number;
  /** Copies of each stream in a NATS cluster (1, or 3 in production). Default 1. */
  replicas?: number;
  /** More options for the NATS client's `connect` (credentials, TLS, name). */
  connectOptions?: Record<string, unknown>;
}

/** KV bucket of the close markers, one key per shared channel. */
const CLOSE_BUCKET = 'netchan_closed';
/** Durable consumer every server of a channel pulls from. */
const CONSUMER = 'netchan';

/** What {@link jetstream} resolves to: pass it as `backend` to `server.channel` or `listen`. */
export interface JetStreamBackend extends ChannelBackend {
  /**
   * The shared channel `name` as this server serves it: values live in the JetStream stream of
   * that name, bounded to `capacity` (at least 1). Throws `ERR_INVALID_ARGUMENT` for capacity 0.
   */
  channel<T>(name: string, capacity: number): SharedChannel<T>;
  /** Deletes a channel's stream and close marker (its values are gone). */
  remove(name: string): Promise<void>;
  /** Stops every shared channel made here (nothing is closed for the other servers) and the NATS connection. */
  close(): Promise<void>;
}

/**
 * Connects to NATS JetStream for shared channels: every netchan server given a backend on the
 * same NATS shares the channels of the same name (docs/cluster.md). Rejects `ERR_BACKEND` when
 * the NATS client is not installed or NATS cannot be reached.
 *
 * ```ts
 * const backend = await jetstream({ servers: 'nats://127.0.0.1:4222' });
 * const jobs = server.channel('jobs', 100, { backend });
 * ```
 */
export async function jetstream(options: JetStreamOptions): Promise<JetStreamBackend> {
  const engine = await natsEngine(options);
  const channels = new Set<SharedChannel<unknown>>();
  return {
    channel<T>(name: string, capacity: number): SharedChannel<T> {
      const ch = new SharedChannel<T>(engine, name, capacity, (c) => channels.delete(c as SharedChannel<unknown>));
      channels.add(ch as SharedChannel<unknown>);
      return ch;
    },
    async remove(name: string): Promise<void> {
      const { stream, key } = SharedChannel.names(name);
      await engine.remove(stream, key);
    },
    async close(): Promise<void> {
      for (const ch of [...channels]) ch.stop();
      await engine.close();
    },
  };
}

type Nats = typeof import('@nats-io/transport-node');
type Js = typeof import('@nats-io/jetstream');
type Kv = typeof import('@nats-io/kv');

async function load(): Promise<[Nats, Js, Kv]> {
  try {
    return await Promise.all([import('@nats-io/transport-node'), import('@nats-io/jetstream'), import('@nats-io/kv')]);
  } catch (err) {
    throw netchanError(ErrorCodes.BACKEND, 'shared channels need the NATS client: npm install @nats-io/transport-node @nats-io/jetstream @nats-io/kv', { cause: err });
  }
}

function nanos(ms: number): number {
  return Math.round(ms * 1e6);
}

/** The {@link Engine} on a real NATS connection. */
async function natsEngine(options: JetStreamOptions): Promise<Engine> {
  const [nats, js, kvModule] = await load();
  const ackWaitMs = options.ackWaitMs ?? 30_000;
  const maxAckPending = options.maxAckPending ?? 1024;
  const duplicateWindowMs = options.duplicateWindowMs ?? 120_000;
  const replicas = options.replicas ?? 1;
  const prefetch = options.prefetch ?? 0;
  for (const [what, v, min] of [['ackWaitMs', ackWaitMs, 100], ['prefetch', prefetch, 0], ['maxAckPending', maxAckPending, 1], ['duplicateWindowMs', duplicateWindowMs, 100], ['replicas', replicas, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `${what} must be an integer of at least ${min}`);
  }
  let nc: Awaited<ReturnType<Nats['connect']>>;
  try {
    // a NATS outage is waited out: publishes, pulls and acks retry once the client is back
    nc = await nats.connect({ maxReconnectAttempts: -1, reconnectTimeWait: 250, ...options.connectOptions, servers: options.servers });
  } catch (err) {
    throw netchanError(ErrorCodes.BACKEND, `cannot connect to NATS at ${String(options.servers)}: ${(err as Error).message}`, { cause: err });
  }
  const client = js.jetstream(nc);
  const jsm = await js.jetstreamManager(nc);
  const kvm = new kvModule.Kvm(nc);
  let kv: Awaited<ReturnType<InstanceType<Kv['Kvm']>['create']>> | null = null;
  const bucket = async () => (kv ??= await kvm.create(CLOSE_BUCKET, { history: 1, replicas }));
  const consumers = new Map<string, Awaited<ReturnType<typeof client.consumers.get>>>();

  return {
    ackWaitMs,
    prefetch,
    get maxPayload() {
      return nc.info?.max_payload ?? 1024 * 1024;
    },
    async publish(subject, data, msgID, timeoutMs) {
      const ack = await client.publish(subject, data, { msgID, timeout: timeoutMs });
      return { duplicate: ack.duplicate };
    },
    async ensureStream(stream, subject, capacity) {
      const config = {
        name: stream,
        subjects: [subject],
        retention: js.RetentionPolicy.Workqueue,
        discard: js.DiscardPolicy.New,
        max_msgs: capacity,
        duplicate_window: nanos(duplicateWindowMs),
        storage: js.StorageType.File,
        num_replicas: replicas,
      };
      try {
        return (await jsm.streams.add(config)).config.max_msgs;
      } catch (err) {
        // made before with other limits: the capacity it has is the answer
        const info = await jsm.streams.info(stream).catch(() => null);
        if (info) return info.config.max_msgs;
        throw err;
      }
    },
    async ensureConsumer(stream) {
      const config = {
        durable_name: CONSUMER,
        ack_policy: js.AckPolicy.Explicit,
        ack_wait: nanos(ackWaitMs),
        max_ack_pending: maxAckPending,
        max_deliver: -1,
        deliver_policy: js.DeliverPolicy.All,
      };
      try {
        await jsm.consumers.add(stream, config);
      } catch (err) {
        // one made before (by another server, perhaps with other timings) is shared as it is
        if (!(await jsm.consumers.info(stream, CONSUMER).catch(() => null))) throw err;
      }
      consumers.set(stream, await client.consumers.get(stream, CONSUMER));
    },
    async fetch(stream, max, expiresMs) {
      const consumer = consumers.get(stream);
      if (!consumer) throw netchanError(ErrorCodes.BACKEND, `no consumer on ${stream}`);
      return (await consumer.fetch({ max_messages: max, expires: expiresMs })) as AsyncIterable<PulledMessage>;
    },
    async messages(stream) {
      return (await jsm.streams.info(stream)).state.messages;
    },
    async closeMarker(key) {
      const e = await (await bucket()).get(key);
      return e && e.operation === 'PUT' ? e.string() : null;
    },
    async markClosed(key, marker) {
      await (await bucket()).put(key, marker);
    },
    async watchClose(key, onMarker) {
      const it = await (await bucket()).watch({ key });
      void (async () => {
        for await (const e of it) if (e.operation === 'PUT') onMarker(e.string());
      })().catch(() => {});
      return () => it.stop();
    },
    async remove(stream, key) {
      await jsm.streams.delete(stream).catch(() => false);
      await (await bucket()).delete(key);
    },
    async close() {
      await nc.close();
    },
  };
}
