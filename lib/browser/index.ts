/**
 * netchan in a web page (`netchan/browser`): the same channels, `select`, remote handles,
 * references inside values and resumption as in Node, over the WebSocket fallback. Built as one
 * ESM bundle without Node built-ins (`npm run build:browser`).
 * @packageDocumentation
 */
export { Channel, select } from '../core/channel.js';
export type { ChannelLike, OperationOptions, TryReceiveResult, SelectCase, SelectResult, SelectOptions } from '../core/channel.js';
export { NetchanError, ErrorCodes, isNetchanError } from '../core/errors.js';
export type { ErrorCode, NetchanErrorOptions } from '../core/errors.js';
export { RemoteChannel } from '../session/channel-stream.js';
export type { RemoteChannelOptions } from '../session/channel-stream.js';
export type { Stats } from '../session/stream-context.js';
export type { SessionEvents } from '../client/options.js';
export type { WebBytes } from '../session/web-streams.js';
export { connect } from './connect.js';
export type { BrowserConnectOptions } from './connect.js';
export { BrowserSession as Session } from './session.js';
