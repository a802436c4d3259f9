/**
 * The `node:diagnostics_channel` events of docs/observability.md: a real session over HTTP/2 and
 * over the WebSocket fallback opens, carries a channel and a byte stream, loses its connection
 * and resumes, has a stream refused and a rule broken, and closes; every step is published once,
 * with the payload the document gives. The document and the code name the same channels.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import { Channel, DIAGNOSTICS_CHANNELS, type ChannelLike, type RemoteChannel, type Session } from '../lib/index.js';
import type { FramedStream } from '../lib/session/framed-stream.js';
import { FrameType } from '../lib/wire/frames.js';
import { rejection } from './helpers/assert.js';
import { startServer, teardown, until, useTransport } from './helpers/net.js';

interface Seen {
  name: string;
  event: Record<string, unknown>;
}

/** Records every event of netchan's channels until `stop()`. */
function record(): { seen: Seen[]; of(name: string): Record<string, unknown>[]; stop(): void } {
  const seen: Seen[] = [];
  const handlers = Object.values(DIAGNOSTICS_CHANNELS).map((name) => {
    const handler = (event: unknown) => seen.push({ name, event: event as Record<string, unknown> });
    diagnostics_channel.subscribe(name, handler);
    return () => diagnostics_channel.unsubscribe(name, handler);
  });
  return {
    seen,
    of: (name) => seen.filter((s) => s.name === name).map((s) => s.event),
    stop: () => handlers.forEach((off) => off()),
  };
}

/** The frame writer under a program's remote handle. */
function framesOf(handle: object): FramedStream {
  return ((handle as { endpoint: { fs: FramedStream } }).endpoint as { fs: FramedStream }).fs;
}

/** Cuts the TCP connection under a client session, as a network would. */
function cut(session: Session): void {
  const wire = (session as unknown as { wire: { h2?: object; ws?: { _socket?: net.Socket } } }).wire;
  if (wire.ws?._socket) return void wire.ws._socket.destroy();
  // an HTTP/2 session's `socket` is a proxy that refuses destroy(): the socket itself is under a symbol
  const h2 = wire.h2 as Record<symbol, net.Socket>;
  const key = Object.getOwnPropertySymbols(h2).find((k) => k.description === 'socket');
  (h2[key as symbol] as net.Socket).destroy();
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

describe('observability: the diagnostics channels', function () {
  this.timeout(30_000);
  afterEach(teardown);

  it('docs/observability.md names every channel the code publishes on, and no other', () => {
    const doc = readFileSync(new URL('../docs/observability.md', import.meta.url), 'utf8');
    const named = new Set([...doc.matchAll(/`(netchan:[a-z:-]+)`/g)].map((m) => m[1]));
    expect([...named].sort()).to.deep.equal([...Object.values(DIAGNOSTICS_CHANNELS), 'netchan:gateway'].sort());
  });

  for (const transport of ['h2', 'ws'] as const) {
    describe(`over ${transport}`, () => {
      before(() => useTransport(transport));
      after(() => useTransport('h2'));

      it('a session open, a channel and a byte stream, a cut and a resumption, and a close: each once, on both sides', async () => {
        const rec = record();
        try {
          const { server, client } = await startServer({ sessionLeaseMs: 5000 });
          const uploads = server.channel<{ data: Readable; reply: ChannelLike<number> }>('uploads', 1);
          void (async () => {
            for await (const { data, reply } of uploads) {
              let n = 0;
              for await (const chunk of data) n += (chunk as Buffer).length;
              await reply.send(n);
              // its stream goes now, not when the handle is collected
              (reply as RemoteChannel<number>).release();
            }
          })();
          const session = await client();
          expect(rec.of(DIAGNOSTICS_CHANNELS.sessionOpen)).to.have.deep.members([
            { side: 'client', sessionId: session.id, principal: undefined, transport, resumable: true },
            { side: 'server', sessionId: session.id, principal: '', transport, resumable: true },
          ]);

          const handle = session.channel<{ data: Readable; reply: ChannelLike<number> }>('uploads');
          const reply = new Channel<number>();
          await handle.send({ data: Readable.from([Buffer.alloc(1000), Buffer.alloc(24)]), reply });
          expect(await reply.receive()).to.equal(1024);
          handle.release();
          await until(() => server.stats().channels === 0 && server.stats().byteStreams === 0, 5000, 'the streams to close');
          await until(() => rec.of(DIAGNOSTICS_CHANNELS.streamClose).length === rec.of(DIAGNOSTICS_CHANNELS.streamOpen).length, 5000, 'a close for every open');
          const opened = rec.of(DIAGNOSTICS_CHANNELS.streamOpen);
          // the named channel, the reply channel and the byte stream, each on both sides
          expect(opened.filter((e) => e.kind === 'channel' && e.side === 'client').map((e) => e.role).sort()).to.deep.equal(['owner', 'remote']);
          expect(opened.filter((e) => e.kind === 'channel' && e.side === 'server').map((e) => e.role).sort()).to.deep.equal(['owner', 'remote']);
          expect(opened.filter((e) => e.kind === 'bytes').map((e) => e.side).sort()).to.deep.equal(['client', 'server']);
          for (const e of opened) expect(e.sessionId).to.equal(session.id);
          const key = (e: Record<string, unknown>) => `${String(e.side)} ${String(e.streamId)} ${String(e.kind)} ${String(e.role)}`;
          expect(rec.of(DIAGNOSTICS_CHANNELS.streamClose).map(key).sort()).to.deep.equal(opened.map(key).sort());

          const reconnected = new Promise<void>((resolve) => session.once('reconnect', () => resolve()));
          cut(session);
          await reconnected;
          await until(() => rec.of(DIAGNOSTICS_CHANNELS.sessionResume).length === 2, 5000, 'both sides to resume');
          expect(rec.of(DIAGNOSTICS_CHANNELS.sessionResume).map((e) => e.side).sort()).to.deep.equal(['client', 'server']);

          await session.close();
          await until(() => rec.of(DIAGNOSTICS_CHANNELS.sessionClose).length === 2, 5000, 'both sides to close');
          for (const e of rec.of(DIAGNOSTICS_CHANNELS.sessionClose)) expect(e).to.include({ sessionId: session.id, code: 'ERR_SESSION_CLOSED' });
          expect(rec.of(DIAGNOSTICS_CHANNELS.sessionOpen)).to.have.length(2);
          expect(rec.of(DIAGNOSTICS_CHANNELS.protocolError)).to.deep.equal([]);
          expect(rec.of(DIAGNOSTICS_CHANNELS.streamRefused)).to.deep.equal([]);
        } finally {
          rec.stop();
        }
      });

      it('a refused stream is published with its status and code; a broken rule with the stream and its code', async () => {
        const rec = record();
        try {
          const { server, client } = await startServer();
          server.channel<number>('out', 4);
          const session = await client();
          const err = await rejection(session.channel<number>('no-such').receive());
          expect(err.code).to.equal('ERR_UNKNOWN_CHANNEL');
          const refused = rec.of(DIAGNOSTICS_CHANNELS.streamRefused);
          expect(refused).to.have.length(1);
          expect(refused[0]).to.include({ status: 404, code: 'ERR_UNKNOWN_CHANNEL', sessionId: session.id, kind: 'channel' });

          // a CREDIT beyond the receive window (docs/PROTOCOL.md §5.2), written by hand
          const out = session.channel<number>('out');
          await until(() => (out as unknown as { endpoint: { opened: boolean } }).endpoint.opened, 5000, 'the stream to open');
          framesOf(out).frame(FrameType.CREDIT, u32(0xffffffff));
          expect((await rejection(out.receive())).code).to.equal('ERR_PROTOCOL');
          await until(() => rec.of(DIAGNOSTICS_CHANNELS.protocolError).length > 0, 5000, 'the protocol error');
          const [broken] = rec.of(DIAGNOSTICS_CHANNELS.protocolError);
          expect(broken).to.include({ side: 'server', sessionId: session.id, code: 'ERR_PROTOCOL' });
          expect(broken!.streamId).to.match(/^c\d+$/);
          expect(String(broken!.message)).to.match(/CREDIT/);
        } finally {
          rec.stop();
        }
      });
    });
  }

  it('a malformed frame on the control stream is published as a protocol error of stream `control`', async () => {
    const rec = record();
    try {
      const { client } = await startServer();
      const session = await client({ reconnect: false });
      const control = (session as unknown as { control: { framed: FramedStream } }).control.framed;
      // a PING header announcing 2 GiB: over the server's frame limit (docs/PROTOCOL.md §2)
      control.wire.bytes.write(Buffer.from([FrameType.PING, 0x7f, 0xff, 0xff, 0xff]));
      await until(() => rec.of(DIAGNOSTICS_CHANNELS.protocolError).length > 0, 5000, 'the protocol error');
      expect(rec.of(DIAGNOSTICS_CHANNELS.protocolError)[0]).to.include({ side: 'server', sessionId: session.id, streamId: 'control', code: 'ERR_FRAME_TOO_LARGE' });
    } finally {
      rec.stop();
    }
  });
});
