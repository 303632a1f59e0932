// Entry point of nudge.js, the script-tag build: install the API on the page as soon as the file
// runs, taking the stub the loader snippet left (see api.js). The host defaults to the origin
// this file was loaded from.

import { install } from './api.js';

if (typeof window !== 'undefined' && typeof document !== 'undefined') {
  const script = document.currentScript;
  install(window, { scriptSrc: script && script.src });
}
