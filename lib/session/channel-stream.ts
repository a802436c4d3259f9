/**
 * One channel over one stream, for the session, client and server: the names they use, from
 * the files that do each job. The side that holds the channel is the owner
 * ({@link ChannelExporter}, exporter.ts, which reaches the channel through an owner port:
 * owner-port.ts, local-port.ts, forwarded-port.ts); the other side holds a
 * {@link RemoteChannel} handle (remote-channel.ts) on the session's {@link RemoteEndpoint}
 * (remote-endpoint.ts, remote-sender.ts). Which side opened the stream does not matter here.
 *
 * Credits (docs/PROTOCOL.md §5, windows.ts): the owner grants send credits (the channel's
 * capacity, at least one) and returns one with every ACK; the remote grants receive demand with
 * CREDIT frames and acknowledges every value handed to its program with ACK, so that values
 * taken but never delivered can go back to the channel when the stream goes away.
 *
 * A pair stream (pair-stream.ts) carries two channels, one each way, with an endpoint of each
 * kind per channel on the one stream.
 */
export { ChannelExporter, type ExportableChannel } from './exporter.js';
export { RemoteChannel } from './remote-channel.js';
export { RemoteEndpoint, type RemoteChannelOptions, type RemoteOpenInfo } from './remote-endpoint.js';
export { NOTHING, type OwnerPort, type PortListener, type PortSource } from './owner-port.js';
export { MAX_PENDING_RECEIVES, MAX_PREFETCH, receiveWindow, sendWindow } from './windows.js';
