/**
 * A session's control stream (docs/PROTOCOL.md §4.1), as client and server both keep it: every
 * frame from the peer is a sign of life, a PING is answered with a PONG, and silence longer than
 * the idle timeout ends (or suspends) the session. The client pings on an interval; the server
 * only listens, and pings once right behind its answer.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import { FrameType } from '../wire/frames.js';
import type { FramedStream } from './framed-stream.js';

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
  /** Sends a PING this often, in ms (the client); undefined: never (the server). */
  pingIntervalMs?: number;
  /** The peer, for the idle error's message: `server` or `client`. */
  peer: 'server' | 'client';
}

export class ControlStream {
  private lastFrameAt = Date.now();
  private timer: NodeJS.Timeout | null;

  constructor(
    readonly framed: FramedStream,
    options: ControlOptions,
    events: ControlEvents,
  ) {
    const { idleTimeoutMs, pingIntervalMs } = options;
    framed.setSink({
      onFrame: (type, payload) => {
        this.lastFrameAt = Date.now();
        // A peer that sends PINGs and reads nothing would have its PONGs pile up without end:
        // while the stream's write buffer is full, a PING counts as life but gets no answer.
        if (type === FrameType.PING && !framed.congested) framed.frame(FrameType.PONG, payload);
      },
      onStreamEnd: () => events.ended(),
      onStreamError: (err) => events.failed(err),
      onStreamClose: () => events.closed(),
      onViolation: (err) => events.violation(err),
    });
    const idle = netchanError.bind(null, ErrorCodes.TIMEOUT, options.peer === 'server' ? `no frame from the server for ${idleTimeoutMs} ms` : `no heartbeat for ${idleTimeoutMs} ms`);
    this.timer = setInterval(
      () => {
        if (Date.now() - this.lastFrameAt > idleTimeoutMs) return events.idle(idle());
        if (pingIntervalMs !== undefined) this.ping();
      },
      pingIntervalMs ?? Math.max(50, Math.floor(idleTimeoutMs / 3)),
    );
    this.timer.unref();
  }

  /** Sends a PING now: 8 random bytes the peer echoes. */
  ping(): void {
    this.framed.frame(FrameType.PING, randomBytes(8));
  }

  /** Stops watching for silence (the stream stays as it is). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
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
