import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { ErrorCodes, NetchanError, fromNodeError, isNetchanError, netchanError } from '../lib/core/errors.js';

describe('NetchanError', () => {
  it('every code in ErrorCodes is documented in docs/errors.md', () => {
    const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
    const missing = Object.values(ErrorCodes).filter((code) => !doc.includes(`| \`${code}\` |`));
    expect(missing).to.deep.equal([]);
  });

  it('carries code, message, cause and name', () => {
    const cause = new Error('root');
    const err = netchanError(ErrorCodes.DECODE, 'bad bytes', { cause });
    expect(err).to.be.instanceOf(NetchanError).and.instanceOf(Error);
    expect(err.code).to.equal('ERR_DECODE');
    expect(err.name).to.equal('NetchanError');
    expect(err.cause).to.equal(cause);
    expect(isNetchanError(err, 'ERR_DECODE')).to.equal(true);
    expect(isNetchanError(err, 'ERR_ENCODE')).to.equal(false);
  });

  it('maps Node error codes in one place', () => {
    const of = (code: string) => fromNodeError(Object.assign(new Error(code), { code })).code;
    expect(of('ECONNREFUSED')).to.equal('ERR_CONNECT');
    expect(of('ECONNRESET')).to.equal('ERR_CONNECTION_LOST');
    expect(of('ERR_HTTP2_STREAM_CANCEL')).to.equal('ERR_STREAM_RESET');
    expect(of('DEPTH_ZERO_SELF_SIGNED_CERT')).to.equal('ERR_TLS');
    expect(of('ESOMETHINGELSE')).to.equal('ERR_CONNECTION_LOST');
    const already = netchanError(ErrorCodes.TIMEOUT, 't');
    expect(fromNodeError(already)).to.equal(already);
  });
});
