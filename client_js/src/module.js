// Entry point of the ES module build, for bundlers:
//
//   import nudge from 'nudge-snippet';
//   nudge.init({ siteKey: 'pk_live_shop', host: 'https://nudge.shop.example' });
//
// Importing installs the same API as the script tag (on window.nudge too, so a copy loaded by a
// tag and one bundled are one and the same). Where there is no window — server-side rendering —
// the default export is an inert stand-in, so importing code need not check.

import { install } from './api.js';

const METHODS = ['init', 'track', 'identify', 'page', 'shutdown', 'optOut', 'onMessage', 'visitorId'];

function inert() {
  const api = () => {};
  for (const m of METHODS) api[m] = () => {};
  api.onMessage = () => () => {};
  api.visitorId = () => null;
  api.state = 'closed';
  return api;
}

const nudge = typeof window !== 'undefined' && typeof document !== 'undefined' ? install(window) : inert();

export { install };
export default nudge;
