/**
 * Joins a TCP socket and a wire stream, for the TCP gateway's two ends (the server's connection
 * to a target, a client's forwarded local connection): bytes both ways with backpressure, a FIN
 * as an end of the stream and back, a reset as a reset.
 */
import type net from 'node:net';
import { debug } from '../core/debug.js';
import { ErrorCodes, netchanError } from '../core/errors.js';
import type { WireStream } from './contract.js';

/** How a joined connection ended. */
export interface JoinResult {
  outcome: 'closed' | 'reset';
  error?: Error;
}

/**
 * Joins a TCP socket and a tunnel stream: bytes both ways with backpressure (pipe), each FIN as
 * the other's END_STREAM and back (half-close), a reset or failure on either side as a reset of
 * the other. Calls `done` once both are closed.
 */
export function join(socket: net.Socket, wire: WireStream, done: (result: JoinResult) => void, socketPiped = false): { abort(): void } {
  const stream = wire.bytes;
  let socketClosed = false;
  let streamClosed = false;
  let reset = false;
  let error: Error | undefined;
  socket.on('error', (err) => {
    error ??= err;
    debug('gateway socket error: %s', err.message);
  });
  stream.on('error', (err) => {
    error ??= err;
    debug('gateway stream error: %s', err.message);
  });
  const resetTunnel = (): void => {
    reset = true;
    // a reset with CANCEL ends the writable side first when it can (END_STREAM, then
    // RST_STREAM), which the peer would read as a FIN: a failed tunnel fails, a bare reset
    wire.fail(netchanError(ErrorCodes.STREAM_RESET, 'tunnel reset'));
  };
  const resetSocket = (): void => {
    reset = true;
    if (!socket.destroyed) socket.resetAndDestroy();
  };
  const maybeDone = (): void => {
    if (socketClosed && streamClosed) done({ outcome: reset || error ? 'reset' : 'closed', error });
  };
  const onSocketClose = (hadError: boolean): void => {
    socketClosed = true;
    // A clean close means both FINs went through and everything was written: the stream then
    // finishes on its own. Anything else is a failure the peer must see as one.
    if (hadError || error || !socket.readableEnded || !socket.writableFinished) resetTunnel();
    maybeDone();
  };
  const onStreamClose = (): void => {
    streamClosed = true;
    if (wire.cutOff || !stream.readableEnded) resetSocket();
    maybeDone();
  };
  if (socket.destroyed) onSocketClose(false);
  else socket.once('close', onSocketClose);
  if (stream.destroyed) onStreamClose();
  else stream.once('close', onStreamClose);
  // A stream reset by the peer may also end its readable side: only a clean end is a FIN.
  stream.pipe(socket, { end: false });
  stream.once('end', () => {
    if (wire.cutOff) resetSocket();
    else socket.end();
  });
  if (!socketPiped) socket.pipe(stream);
  return {
    abort() {
      resetTunnel();
      resetSocket();
    },
  };
}
