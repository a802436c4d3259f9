/**
 * netchan: Go-style channels, in process and over the network.
 * @packageDocumentation
 */
export { Channel, select } from './channel.js';
export type { ChannelLike, OperationOptions, TryReceiveResult, SelectCase, SelectResult, SelectOptions } from './channel.js';
export { NetchanError, ErrorCodes, isNetchanError } from './errors.js';
export type { ErrorCode, NetchanErrorOptions } from './errors.js';
export { createServer, NetchanServer, DEFAULT_LIMITS, DEFAULT_TIMEOUTS } from './server.js';
export type { Limits, ServerOptions, StreamContextInfo, Timeouts } from './server.js';
export { connect, Session } from './client.js';
export type { ConnectOptions, RemoteChannelHandle } from './client.js';
export type { TransportChoice } from './transport.js';
export { RemoteChannel } from './channel-stream.js';
export { Forwarder, GATEWAY_AUDIT_CHANNEL, GATEWAY_DEFAULTS, specialAddressKind } from './gateway.js';
export type { DialTcpOptions, ForwardOptions, Gateway, GatewayAuditEvent, GatewayOptions, GatewayPrincipalRule, GatewayRule, GatewayTargetRequest, GatewayTargetRule } from './gateway.js';
export type { Stats } from './stream-context.js';
export { listen, dial, devCertificateDir, CLUSTER_CHANNELS } from './cluster.js';
export type { Listener, ListenOptions, Dialer, DialOptions } from './cluster.js';
