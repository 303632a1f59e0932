// Segment's own Node library, @segment/analytics-node, pointed at a Nudge server: the Python
// tests (tests/test_cdp.py) run it to deliver the calls a shop's Node backend would.
//
//   node test-support/segment-node.mjs <host> <writeKey> '<json list of [method, params]>'
//
// Prints one JSON line: {"errors": [...]} — what the library reported (nothing when delivered).
import { Analytics } from '@segment/analytics-node';

const [host, writeKey, calls] = process.argv.slice(2);
const analytics = new Analytics({ writeKey, host, flushAt: 20, flushInterval: 50, maxRetries: 0 });
const errors = [];
analytics.on('error', (err) => errors.push(String((err && (err.reason || err.message || err.code)) || err)));
for (const [method, params] of JSON.parse(calls)) analytics[method](params);
await analytics.closeAndFlush({ timeout: 10000 });
console.log(JSON.stringify({ errors }));
