/**
 * Tagged JSON for test vectors: how values JSON cannot hold are written in test/vectors/*.json.
 * `{"$bigint": "-1"}`, `{"$map": [[k, v], ...]}`, `{"$set": [...]}`, `{"$date": "ISO-8601"}`,
 * `{"$bin": "hex"}`, `{"$undefined": true}`, `{"$error": {"name", "message", ...fields}}`.
 */
export function fromTagged(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(fromTagged);
  if (v === null || typeof v !== 'object') return v;
  const o = v as Record<string, unknown>;
  if ('$bigint' in o) return BigInt(o.$bigint as string);
  if ('$map' in o) return new Map((o.$map as [unknown, unknown][]).map(([k, val]) => [fromTagged(k), fromTagged(val)]));
  if ('$set' in o) return new Set((o.$set as unknown[]).map(fromTagged));
  if ('$date' in o) return new Date(o.$date as string);
  if ('$bin' in o) return Buffer.from(o.$bin as string, 'hex');
  if ('$undefined' in o) return undefined;
  if ('$error' in o) {
    const { name, message, ...fields } = o.$error as Record<string, unknown>;
    const err = new Error(message as string);
    Object.defineProperty(err, 'name', { value: name, writable: true, enumerable: false, configurable: true });
    for (const [k, val] of Object.entries(fields)) (err as unknown as Record<string, unknown>)[k] = fromTagged(val);
    return err;
  }
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(o)) out[k] = fromTagged(val);
  return out;
}
