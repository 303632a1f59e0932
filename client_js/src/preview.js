// Entry point of the dashboard's message preview (built into
// server/nudge/static/dashboard/preview.js): the snippet's own renderer, from the same source as
// nudge.js, on a sample page the dashboard shows in a frame per screen width. No socket, no
// capture: the dashboard hands it `show` records the server rendered (/api/campaigns/preview).

import { createRenderer } from './render.js';

let renderer = null;

// A modal takes the focus on a shopper's page; in the editor the focus stays where the operator
// types (the frame is inert, and a focus() call from inside would still move it into the frame).
HTMLElement.prototype.focus = function focus() {};

function fresh() {
  if (renderer) renderer.destroy();
  const quiet = () => {};
  renderer = createRenderer({
    win: window,
    doc: document,
    onShown: quiet,
    onClick: quiet,
    onDismiss: quiet,
    navigate: quiet, // a preview goes nowhere
    toastMs: 3600000, // a toast stays while it is looked at
  });
  return renderer;
}

window.nudgePreview = {
  /** Show `msg` (a show record) alone on the page, in place of whatever was there. */
  show(msg) {
    fresh().show(msg);
  },
  clear() {
    fresh();
  },
};
