// One codec per encoding, each named by the subprotocol that selects it (docs/protocol.md,
// "Encodings"). The transport offers every codec it was given, most preferred first, and uses
// the one the server picked; it does not know which one that is.
//
// MessagePack is hand-written for the subset the protocol uses (nil, booleans, numbers, strings,
// arrays, maps with string keys): about 1 KB minified, where the smallest general library
// (@msgpack/msgpack) would be over 10 KB and alone break the snippet's budget. Encoding never
// meets other types, because every record the snippet sends has been through JSON already.

const enc = typeof TextEncoder !== 'undefined' ? new TextEncoder() : null;
const dec = typeof TextDecoder !== 'undefined' ? new TextDecoder() : null;

/** JSON in text frames: `nudge.v1.json`. */
export const json = {
  subprotocol: 'nudge.v1.json',
  binary: false,
  encode: (record) => JSON.stringify(record),
  // A binary frame is not JSON: answer null and let the transport ignore it.
  decode: (data) => (typeof data === 'string' ? JSON.parse(data) : null),
};

/** MessagePack in binary frames: `nudge.v1.msgpack`. */
export const msgpack = {
  subprotocol: 'nudge.v1.msgpack',
  binary: true,
  encode(record) {
    const out = [];
    pack(record, out);
    return Uint8Array.from(out);
  },
  // A text frame is not MessagePack: null, as json.decode does for binary frames.
  decode: (data) => (typeof data === 'string' ? null : unpack(new Uint8Array(data))),
};

/** The codecs offered by default, most preferred first. */
export const CODECS = [json];

/** The codec for the subprotocol the server chose; none chosen means JSON. */
export function pick(codecs, subprotocol) {
  for (const c of codecs) if (c.subprotocol === subprotocol) return c;
  return json;
}

/** Size in bytes of an encoded frame, as the server counts it against its limit. */
export function byteLength(data) {
  if (typeof data !== 'string') return data.byteLength;
  return enc ? enc.encode(data).length : data.length * 3; // UTF-8 is at most 3 bytes per unit
}

// -- MessagePack (https://github.com/msgpack/msgpack/blob/master/spec.md)

/** Append the big-endian bytes of the `n`-byte unsigned integer `v`. */
function be(out, v, n) {
  for (let i = n - 1; i >= 0; i--) out.push(Math.floor(v / Math.pow(256, i)) & 255);
}

/** Append a length header: the fix form up to `fixMax`, else the 8- (if any), 16- or 32-bit form. */
function head(out, n, fixBase, fixMax, code8, code16) {
  if (n <= fixMax) out.push(fixBase | n);
  else if (code8 && n < 256) out.push(code8, n);
  else if (n < 65536) out.push(code16, n >> 8, n & 255);
  else out.push(code16 + 1), be(out, n, 4);
}

function pack(v, out) {
  if (v == null) out.push(0xc0);
  else if (v === false) out.push(0xc2);
  else if (v === true) out.push(0xc3);
  else if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      if (v < 128) out.push(v);
      else if (v < 256) out.push(0xcc, v);
      else if (v < 65536) out.push(0xcd), be(out, v, 2);
      else if (v < 4294967296) out.push(0xce), be(out, v, 4);
      else out.push(0xcf), be(out, v, 8);
    } else if (Number.isInteger(v) && v < 0 && v >= -2147483648) {
      if (v >= -32) out.push(v & 255);
      else out.push(0xd2), be(out, v >>> 0, 4);
    } else {
      // Fractions and large negative integers as float 64.
      const d = new DataView(new ArrayBuffer(8));
      d.setFloat64(0, v); // big-endian, as MessagePack wants
      out.push(0xcb);
      for (let i = 0; i < 8; i++) out.push(d.getUint8(i));
    }
  } else if (typeof v === 'string') {
    const b = utf8(v);
    head(out, b.length, 0xa0, 31, 0xd9, 0xda);
    for (let i = 0; i < b.length; i++) out.push(b[i]);
  } else if (Array.isArray(v)) {
    head(out, v.length, 0x90, 15, 0, 0xdc);
    for (const x of v) pack(x, out);
  } else {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined);
    head(out, keys.length, 0x80, 15, 0, 0xde);
    for (const k of keys) pack(k, out), pack(v[k], out);
  }
}

function utf8(s) {
  if (enc) return enc.encode(s);
  return Array.from(unescape(encodeURIComponent(s)), (c) => c.charCodeAt(0));
}

/** Decode one MessagePack value filling all of `b`; throws on anything malformed or unknown. */
export function unpack(b) {
  let p = 0;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const need = (n) => {
    if (p + n > b.length) throw new Error('truncated');
    const at = p;
    p += n;
    return at;
  };
  const uint = (n) => {
    const at = need(n);
    return n === 1 ? view.getUint8(at) : n === 2 ? view.getUint16(at) : view.getUint32(at);
  };
  const str = (n) => {
    const at = need(n);
    const bytes = b.subarray(at, at + n);
    return dec ? dec.decode(bytes) : decodeURIComponent(escape(String.fromCharCode.apply(null, bytes)));
  };
  const list = (n) => {
    const a = [];
    while (n--) a.push(value());
    return a;
  };
  const map = (n) => {
    const o = {};
    while (n--) {
      const k = value();
      if (typeof k !== 'string') throw new Error('map key');
      o[k] = value();
    }
    return o;
  };
  function value() {
    const c = uint(1);
    if (c < 0x80) return c;
    if (c < 0x90) return map(c & 15);
    if (c < 0xa0) return list(c & 15);
    if (c < 0xc0) return str(c & 31);
    if (c >= 0xe0) return c - 256;
    switch (c) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xca:
        return view.getFloat32(need(4));
      case 0xcb:
        return view.getFloat64(need(8));
      case 0xcc:
        return uint(1);
      case 0xcd:
        return uint(2);
      case 0xce:
        return uint(4);
      case 0xcf:
        return uint(4) * 4294967296 + uint(4);
      case 0xd0:
        return view.getInt8(need(1));
      case 0xd1:
        return view.getInt16(need(2));
      case 0xd2:
        return view.getInt32(need(4));
      case 0xd3:
        return view.getInt32(need(4)) * 4294967296 + uint(4);
      case 0xd9:
        return str(uint(1));
      case 0xda:
        return str(uint(2));
      case 0xdb:
        return str(uint(4));
      case 0xdc:
        return list(uint(2));
      case 0xdd:
        return list(uint(4));
      case 0xde:
        return map(uint(2));
      case 0xdf:
        return map(uint(4));
    }
    throw new Error('unsupported type 0x' + c.toString(16)); // bin, ext: not in the protocol
  }
  const v = value();
  if (p !== b.length) throw new Error('trailing bytes');
  return v;
}
