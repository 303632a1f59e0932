// One codec per encoding, each named by the subprotocol that selects it (docs/protocol.md,
// "Encodings"). The transport offers every codec it was given, most preferred first, and uses
// the one the server picked. Adding MessagePack later means adding an object with the same
// four members here (binary: true, encode to Uint8Array, decode an ArrayBuffer) — the
// transport does not change.

const enc = typeof TextEncoder !== 'undefined' ? new TextEncoder() : null;

/** JSON in text frames: `nudge.v1.json`. */
export const json = {
  subprotocol: 'nudge.v1.json',
  binary: false,
  encode: (record) => JSON.stringify(record),
  // A binary frame is not JSON: answer null and let the transport ignore it.
  decode: (data) => (typeof data === 'string' ? JSON.parse(data) : null),
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
