/**
 * netchan: Go-style channels, in process and over the network.
 * @packageDocumentation
 */
export { Channel, select } from './core/channel.js';
export type { ChannelLike, OperationOptions, TryReceiveResult, SelectCase, SelectResult, SelectOptions } from './core/channel.js';
export { NetchanError, ErrorCodes, isNetchanError } from './core/errors.js';
export type { ErrorCode, NetchanErrorOptions } from './core/errors.js';
export { createServer, NetchanServer, DEFAULT_LIMITS, DEFAULT_TIMEOUTS } from './server/server.js';
export type { BackedChannel, ChannelBackend, ChannelOptions, Limits, ServerOptions, StreamContextInfo, Timeouts } from './server/server.js';
export { Session } from './client/client.js';
export { connect } from './client/connect.js';
export type { ConnectOptions, SessionEvents } from './client/client.js';
export { connectInMemory } from './client/memory.js';
export type { MemoryConnectOptions, MemoryServer, MemorySession } from './client/memory.js';
export type { TransportChoice } from './transport/connect.js';
export type { TransportKind } from './transport/contract.js';
export { RemoteChannel } from './session/channel-stream.js';
export type { RemoteChannelOptions } from './session/channel-stream.js';
export { Forwarder } from './client/tunnel.js';
export type { DialTcpOptions, ForwardOptions } from './client/tunnel.js';
export { createGateway } from './gateway/gateway.js';
export type { Gateway } from './gateway/gateway.js';
export { GATEWAY_AUDIT_CHANNEL } from './gateway/audit.js';
export type { GatewayAuditEvent } from './gateway/audit.js';
export { GATEWAY_DEFAULTS } from './gateway/rules.js';
export type { GatewayOptions, GatewayPrincipalRule, GatewayRule, GatewayTargetRequest, GatewayTargetRule } from './gateway/rules.js';
export type { Stats } from './session/stream-context.js';
export { DIAGNOSTICS_CHANNELS } from './core/diagnostics.js';
export type { ProtocolErrorEvent, SessionCloseEvent, SessionEvent, StreamEvent, StreamRefusedEvent } from './core/diagnostics.js';
export { listen, dial, devCertificateDir, CLUSTER_CHANNELS } from './cluster/cluster.js';
export type { Listener, ListenOptions, Dialer, DialOptions } from './cluster/cluster.js';
export { jetstream } from './jetstream/jetstream.js';
export type { JetStreamBackend, JetStreamOptions } from './jetstream/jetstream.js';
export { SharedChannel } from './jetstream/shared-channel.js';
