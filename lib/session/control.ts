/**
 * A session's control stream (docs/PROTOCOL.md §4.1), as client and server both keep it: every
 * frame from the peer is a sign of life, a PING is answered with a PONG, and silence longer than
 * the idle timeout ends (or suspends) the session. The client pings on an interval; the server
 * listens, pings once right behind its answer, and pings at each check when its client asks.
 */
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import { FrameType } from '../wire/frames.js';
import type { FrameSink, FramedStream } from './framed-stream.js';

/** What becomes of a control stream, for its session. */
export interface ControlEvents {
  /** The peer ended its side: it closed the session. */
  ended(): void;
  /** The stream failed: reset, a bad frame, the connection lost. */
  failed(error: NetchanError): void;
  /** The stream is gone (after `ended` or `failed`, or without either). */
  closed(): void;
  /** Nothing arrived for the idle timeout: `error` says so (ERR_TIMEOUT). */
  idle(error: NetchanError): void;
  /** A frame broke the rules (the stream then fails): for observers. */
  violation(error: NetchanError): void;
}

/** How a side keeps its control stream. */
export interface ControlOptions {
  /** Silence from the peer this long, in ms, is {@link ControlEvents.idle}. */
  idleTimeoutMs: number;
  /** Sends a PING this often, in ms (the client); undefined: never (the server), unless {@link pings}. */
  pingIntervalMs?: number;
  /** Without `pingIntervalMs`: sends a PING on each check for silence (a server, for a client that asked). */
  pings?: boolean;
  /** The peer, for the idle error's message: `server` or `client`. */
  peer: 'server' | 'client';
}

/**
 * The control streams of the process that share a tick interval, and its one timer: an idle
 * session holds no timer of its own.
 */
class Sweep {
  readonly members = new Set<ControlStream>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly intervalMs: number) {}

  add(control: ControlStream): void {
    this.members.add(control);
    if (this.timer) return;
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const member of this.members) member.tick(now);
    }, this.intervalMs);
    this.timer.unref?.(); // a browser's timers have none
  }

  delete(control: ControlStream): void {
    if (!this.members.delete(control) || this.members.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
    sweeps.delete(this.intervalMs);
  }
}

/** The sweeps by tick interval, in ms. */
const sweeps = new Map<number, Sweep>();

export class ControlStream implements FrameSink {
  private lastFrameAt = Date.now();
  private sweep: Sweep | null;
  private readonly idleTimeoutMs: number;
  private readonly pings: boolean;
  private readonly peer: 'server' | 'client';

  constructor(
    readonly framed: FramedStream,
    options: ControlOptions,
    private readonly events: ControlEvents,
  ) {
    const { idleTimeoutMs, pingIntervalMs } = options;
    this.idleTimeoutMs = idleTimeoutMs;
    this.pings = pingIntervalMs !== undefined || options.pings === true;
    this.peer = options.peer;
    // the stream's sink itself: no closures of its own for every session
    framed.setSink(this);
    // the client pings on its interval; the server checks for silence (and pings, when asked)
    // a third of the timeout apart
    const intervalMs = pingIntervalMs ?? Math.max(50, Math.floor(idleTimeoutMs / 3));
    let sweep = sweeps.get(intervalMs);
    if (!sweep) sweeps.set(intervalMs, (sweep = new Sweep(intervalMs)));
    sweep.add(this);
    this.sweep = sweep;
  }

  /** @internal */
  onFrame(type: number, payload: Buffer): void {
    this.lastFrameAt = Date.now();
    // A peer that sends PINGs and reads nothing would have its PONGs pile up without end:
    // while the stream's write buffer is full, a PING counts as life but gets no answer.
    if (type === FrameType.PING && !this.framed.congested) this.framed.frame(FrameType.PONG, payload);
  }

  /** @internal */
  onStreamEnd(): void {
    this.events.ended();
  }

  /** @internal */
  onStreamError(error: NetchanError): void {
    this.events.failed(error);
  }

  /** @internal */
  onStreamClose(): void {
    this.events.closed();
  }

  /** @internal */
  onViolation(error: NetchanError): void {
    this.events.violation(error);
  }

  /** A tick of its sweep: silence too long is idle, else the client (or a server asked to) pings. @internal */
  tick(now: number): void {
    if (now - this.lastFrameAt > this.idleTimeoutMs) {
      const ms = this.idleTimeoutMs;
      this.events.idle(netchanError(ErrorCodes.TIMEOUT, this.peer === 'server' ? `no frame from the server for ${ms} ms` : `no heartbeat for ${ms} ms`));
      return;
    }
    if (this.pings) this.ping();
  }

  /** Sends a PING now: 8 random bytes the peer echoes. */
  ping(): void {
    this.framed.frame(FrameType.PING, crypto.getRandomValues(new Uint8Array(8)));
  }

  /** Stops watching for silence (the stream stays as it is). */
  stop(): void {
    this.sweep?.delete(this);
    this.sweep = null;
  }

  /** Ends this side of the stream: the session is closed. */
  end(): void {
    this.stop();
    this.framed.end();
  }

  /** Drops the stream at once. */
  destroy(): void {
    this.stop();
    this.framed.destroy();
  }
}
