/**
 * netchan: Go-style channels, in process and over the network.
 * @packageDocumentation
 */
export { Channel, select } from './channel.js';
export type { ChannelLike, OperationOptions, TryReceiveResult, SelectCase, SelectResult, SelectOptions } from './channel.js';
export { NetchanError, ErrorCodes, isNetchanError } from './errors.js';
export type { ErrorCode, NetchanErrorOptions } from './errors.js';
