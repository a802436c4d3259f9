/**
 * What netchan tells observers, through `node:diagnostics_channel` (docs/observability.md):
 * sessions opened, resumed and closed, channel and byte streams opened and closed, streams
 * refused, and rules of the protocol a peer broke. Nothing is built or published while a
 * channel has no subscriber. The TCP gateway's audit trail is a channel of its own
 * (`netchan:gateway`, lib/gateway/audit.ts).
 */
import diagnostics_channel from 'node:diagnostics_channel';

/** The names of netchan's diagnostics channels. */
export const DIAGNOSTICS_CHANNELS = {
  sessionOpen: 'netchan:session:open',
  sessionResume: 'netchan:session:resume',
  sessionClose: 'netchan:session:close',
  streamOpen: 'netchan:stream:open',
  streamClose: 'netchan:stream:close',
  streamRefused: 'netchan:stream:refused',
  protocolError: 'netchan:protocol-error',
} as const;

/** Which end of a session publishes: the client's or the server's. */
export type Side = 'client' | 'server';

/** `netchan:session:open` and `netchan:session:resume`. */
export interface SessionEvent {
  side: Side;
  sessionId: string;
  /** The session's principal (server side; `''` when anonymous), undefined on the client. */
  principal: string | undefined;
  /** What carries it now: `h2`, `ws` or `memory`. */
  transport: string;
  /** Whether the session survives a lost connection (it has a lease). */
  resumable: boolean;
}

/** `netchan:session:close`. */
export interface SessionCloseEvent {
  side: Side;
  sessionId: string;
  /** Why it ended: `ERR_SESSION_CLOSED` for a close by either side, else the failure's code. */
  code: string;
  message: string;
}

/** `netchan:stream:open` and `netchan:stream:close`. */
export interface StreamEvent {
  side: Side;
  sessionId: string;
  /** The stream id (`c1`, …: unique in the session). */
  streamId: string;
  kind: 'channel' | 'bytes';
  /** For a channel stream: `owner` when this side serves the channel, `remote` for a handle on the peer's. */
  role?: 'owner' | 'remote';
}

/** `netchan:stream:refused`: a stream the server answered with a refusal (docs/PROTOCOL.md §4.4). */
export interface StreamRefusedEvent {
  status: number;
  code: string;
  message: string;
  /** The session the stream named, if any. */
  sessionId: string | undefined;
  /** The stream's `netchan-kind`, if any. */
  kind: string | undefined;
  remoteAddress: string | undefined;
}

/** `netchan:protocol-error`: the peer broke a rule, and this side failed the stream (or connection) for it. */
export interface ProtocolErrorEvent {
  side: Side;
  /** The session, when the rule was broken on one of its streams. */
  sessionId: string | undefined;
  /** The stream (`control` for the session's own), when the rule was broken on a stream. */
  streamId: string | undefined;
  code: string;
  message: string;
}

const channels = {
  sessionOpen: diagnostics_channel.channel(DIAGNOSTICS_CHANNELS.sessionOpen),
  sessionResume: diagnostics_channel.channel(DIAGNOSTICS_CHANNELS.sessionResume),
  sessionClose: diagnostics_channel.channel(DIAGNOSTICS_CHANNELS.sessionClose),
  streamOpen: diagnostics_channel.channel(DIAGNOSTICS_CHANNELS.streamOpen),
  streamClose: diagnostics_channel.channel(DIAGNOSTICS_CHANNELS.streamClose),
  streamRefused: diagnostics_channel.channel(DIAGNOSTICS_CHANNELS.streamRefused),
  protocolError: diagnostics_channel.channel(DIAGNOSTICS_CHANNELS.protocolError),
};

/** The payload of each channel. */
interface Payloads {
  sessionOpen: SessionEvent;
  sessionResume: SessionEvent;
  sessionClose: SessionCloseEvent;
  streamOpen: StreamEvent;
  streamClose: StreamEvent;
  streamRefused: StreamRefusedEvent;
  protocolError: ProtocolErrorEvent;
}

/** Publishes `event` on `name` when anyone listens. `event` is made only then. */
export function publish<K extends keyof Payloads>(name: K, event: () => Payloads[K]): void {
  const channel = channels[name];
  if (channel.hasSubscribers) channel.publish(event());
}
