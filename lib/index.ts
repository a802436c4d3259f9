/**
 * netchan: Go-style channels, in process and over the network.
 * @packageDocumentation
 */
export { Channel, select } from './core/channel.js';
export type { ChannelLike, OperationOptions, TryReceiveResult, SelectCase, SelectResult, SelectOptions } from './core/channel.js';
export { NetchanError, ErrorCodes, isNetchanError } from './core/errors.js';
export type { ErrorCode, NetchanErrorOptions } from './core/errors.js';
export { createServer, NetchanServer, DEFAULT_LIMITS, DEFAULT_TIMEOUTS } from './server/server.js';
export type { Limits, ServerOptions, StreamContextInfo, Timeouts } from './server/server.js';
export { connect, Session } from './client/client.js';
export type { ConnectOptions, RemoteChannelHandle } from './client/client.js';
export type { TransportChoice } from './transport/connect.js';
export { RemoteChannel } from './session/channel-stream.js';
export { Forwarder, GATEWAY_AUDIT_CHANNEL, GATEWAY_DEFAULTS, specialAddressKind } from './gateway/gateway.js';
export type { DialTcpOptions, ForwardOptions, Gateway, GatewayAuditEvent, GatewayOptions, GatewayPrincipalRule, GatewayRule, GatewayTargetRequest, GatewayTargetRule } from './gateway/gateway.js';
export type { Stats } from './session/stream-context.js';
export { listen, dial, devCertificateDir, CLUSTER_CHANNELS } from './cluster/cluster.js';
export type { Listener, ListenOptions, Dialer, DialOptions } from './cluster/cluster.js';
