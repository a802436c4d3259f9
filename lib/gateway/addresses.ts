/**
 * Which addresses are special (loopback, link-local, cloud metadata, unspecified, multicast),
 * however they are spelled: an IPv4 address embedded in IPv6 (mapped, NAT64, 6to4) is the IPv4
 * address it carries. The gateway allows a special address only by a rule naming it.
 */
import net from 'node:net';

function ipv6Groups(address: string): number[] {
  let text = address;
  const dotted = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(2).map(Number) as [number, number, number, number];
    text = `${dotted[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const gap = text.indexOf('::');
  if (gap < 0) return parse(text);
  const head = parse(text.slice(0, gap));
  const tail = parse(text.slice(gap + 2));
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

/**
 * The IPv4 address inside an IPv4-mapped (`::ffff:0:0/96`) or NAT64 (`64:ff9b::/96`) IPv6
 * address, in any spelling of it (`0064:ff9b:0::7f00:1` too), or undefined.
 */
function embeddedIPv4(address: string): string | undefined {
  if (!net.isIPv6(address)) return undefined;
  const g = ipv6Groups(address);
  const mapped = g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff;
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0;
  if (!mapped && !nat64) return undefined;
  const hi = g[6]!;
  const lo = g[7]!;
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** Canonical form of an IP address: IPv4-mapped IPv6 becomes IPv4; IPv6 lowercase. */
export function canonicalIp(address: string): string {
  if (net.isIPv6(address)) {
    const g = ipv6Groups(address);
    const mapped = g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff;
    return (mapped ? embeddedIPv4(address) : undefined) ?? address.toLowerCase();
  }
  return address;
}

export function familyOf(address: string): 'ipv4' | 'ipv6' {
  return net.isIPv4(address) ? 'ipv4' : 'ipv6';
}

/** Address ranges a name may never lead to unless a rule names the address itself. */
const SPECIAL_RANGES: [string, number, 'ipv4' | 'ipv6', string][] = [
  ['169.254.169.254', 32, 'ipv4', 'cloud metadata'],
  ['100.100.100.200', 32, 'ipv4', 'cloud metadata'],
  ['fd00:ec2::254', 128, 'ipv6', 'cloud metadata'],
  ['0.0.0.0', 8, 'ipv4', 'unspecified ("this network")'],
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['169.254.0.0', 16, 'ipv4', 'link-local'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'],
  ['240.0.0.0', 4, 'ipv4', 'reserved'],
  ['::', 128, 'ipv6', 'unspecified'],
  ['::1', 128, 'ipv6', 'loopback'],
  ['fe80::', 10, 'ipv6', 'link-local'],
  ['ff00::', 8, 'ipv6', 'multicast'],
];
const specialLists = SPECIAL_RANGES.map(([network, prefix, type, kind]) => {
  const list = new net.BlockList();
  list.addSubnet(network, prefix, type);
  return { list, kind };
});

/**
 * What kind of special address `address` is (`loopback`, `link-local`, `cloud metadata`, …), or
 * `undefined` for an ordinary one. IPv4 inside IPv4-mapped and NAT64 IPv6 addresses counts too.
 */
export function specialAddressKind(address: string): string | undefined {
  const ip = canonicalIp(address);
  const inner = net.isIPv6(ip) ? embeddedIPv4(ip) : undefined;
  for (const candidate of inner ? [ip, inner] : [ip]) {
    const type = familyOf(candidate);
    for (const { list, kind } of specialLists) if (list.check(candidate, type)) return kind;
  }
  return undefined;
}
