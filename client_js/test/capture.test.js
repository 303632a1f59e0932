import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { clip, scrollDepth, startCapture } from '../src/capture.js';
import { fakeElement, fakeWindow } from '../test-support/fakes.js';

function setup(options = {}, href = 'https://shop.example/article?x=1') {
  const win = fakeWindow({ href });
  const events = [];
  const capture = startCapture({
    win,
    doc: win.document,
    track: (name, props) => events.push(props === undefined ? [name] : [name, props]),
    timers: win.clock,
    now: win.clock.now,
    ...options,
  });
  const names = () => events.map((e) => e[0]);
  return { win, doc: win.document, clock: win.clock, events, names, capture };
}

describe('page views', () => {
  test('one on start with path, url, title and referrer', () => {
    const { events } = setup();
    assert.deepEqual(events[0], [
      'page_view',
      {
        path: '/article',
        url: 'https://shop.example/article?x=1',
        title: 'Shop',
        referrer: 'https://search.example/',
      },
    ]);
  });

  test('one per SPA navigation, with the previous address as referrer', () => {
    const { win, doc, clock, events } = setup();
    win.history.pushState({}, '', '/checkout');
    doc.title = 'Checkout'; // set right after the navigation, as SPAs do
    clock.tick(0);
    assert.deepEqual(events.filter((e) => e[0] === 'page_view')[1][1], {
      path: '/checkout',
      url: 'https://shop.example/checkout',
      title: 'Checkout',
      referrer: 'https://shop.example/article?x=1',
    });
    win.history.replaceState({ tab: 2 }, '', '/checkout'); // same page: no new view
    win.history.replaceState({}, '', '/checkout#reviews'); // hash only: no new view
    clock.tick(0);
    win.go('/article?x=1'); // back: popstate is how back/forward arrive
    win.fire('popstate');
    assert.deepEqual(
      events.filter((e) => e[0] === 'page_view').map((e) => e[1].path),
      ['/article', '/checkout', '/article'],
    );
  });

  test('page() records a view even for the same address', () => {
    const { capture, events } = setup();
    capture.page({ title: 'Step 2' });
    const views = events.filter((e) => e[0] === 'page_view');
    assert.equal(views.length, 2);
    assert.equal(views[1][1].title, 'Step 2');
  });
});

describe('scroll depth', () => {
  test('depth in percent of the page, 100 at the end or when it fits the viewport', () => {
    assert.equal(scrollDepth(0, 800, 800), 100);
    assert.equal(scrollDepth(0, 800, 500), 100);
    assert.equal(scrollDepth(0, 800, 4000), 20);
    assert.equal(scrollDepth(1200, 800, 4000), 50);
    assert.equal(scrollDepth(3199, 800, 4000), 100, 'within 2 px of the end');
  });

  test('a short page reports 100 once', () => {
    const { clock, events } = setup();
    clock.tick(16);
    assert.deepEqual(events[1], ['scroll', { depth: 100 }]);
  });

  test('only new 10 % steps of the deepest point are reported', () => {
    const { win, doc, clock, events } = setup();
    doc.documentElement.scrollHeight = 4000;
    clock.tick(16);
    const scroll = (y) => {
      win.scrollY = y;
      win.fire('scroll');
      clock.tick(16);
    };
    scroll(100); // 22 %
    scroll(900); // 42 %
    scroll(950); // 43 %: same step
    scroll(0); // back up: nothing
    scroll(1200); // 50 %
    scroll(3200); // end
    const depths = events.filter((e) => e[0] === 'scroll').map((e) => e[1].depth);
    assert.deepEqual(depths, [20, 40, 50, 100]);
  });

  test('scroll events in one frame are measured once', () => {
    const { win, clock } = setup();
    clock.tick(16);
    const before = clock.pending;
    win.fire('scroll');
    win.fire('scroll');
    win.fire('scroll');
    assert.equal(clock.pending, before + 1);
  });

  test('a new page starts its depth again', () => {
    const { win, doc, clock, events } = setup();
    clock.tick(16);
    doc.documentElement.scrollHeight = 8000;
    win.history.pushState({}, '', '/long');
    clock.tick(16);
    const depths = events.filter((e) => e[0] === 'scroll').map((e) => e[1].depth);
    assert.deepEqual(depths, [100, 10]);
  });
});

describe('clicks', () => {
  const click = (doc, target) => doc.fire('click', { target });

  test('on an element marked data-nudge-click, or inside one', () => {
    const { doc, events } = setup();
    const button = fakeElement('button', { 'data-nudge-click': 'add-to-cart:mug' }, '  Add   to cart\n');
    click(doc, fakeElement('span', {}, 'Add', button));
    assert.deepEqual(events.at(-1), ['click', { target: 'add-to-cart:mug', text: 'Add to cart' }]);
  });

  test('text is cut to 80 characters; unmarked elements are ignored', () => {
    const { doc, events } = setup();
    click(doc, fakeElement('a', { 'data-nudge-click': '' }, 'x'.repeat(200)));
    assert.deepEqual(events.at(-1), ['click', { target: 'a', text: 'x'.repeat(80) }]);
    const count = events.length;
    click(doc, fakeElement('button', {}, 'Plain'));
    assert.equal(events.length, count);
  });

  test('clickAll reports any element; Nudge messages never', () => {
    const { doc, events } = setup({ clickAll: true });
    click(doc, fakeElement('span', {}, 'Buy', fakeElement('button', {}, 'Buy')));
    assert.deepEqual(events.at(-1), ['click', { target: 'button', text: 'Buy' }]);
    const count = events.length;
    click(doc, fakeElement('nudge-message', {}, ''));
    assert.equal(events.length, count);
  });
});

describe('idle', () => {
  test('idle after idleAfter seconds without input, active on the next input', () => {
    const { win, clock, names, events } = setup({ idleAfter: 10 });
    clock.tick(6000);
    win.fire('mousemove');
    clock.tick(9000);
    assert.ok(!names().includes('idle'), 'input restarted the wait');
    clock.tick(1000);
    assert.deepEqual(events.at(-1), ['idle', { after: 10 }]);
    clock.tick(60000);
    assert.equal(names().filter((n) => n === 'idle').length, 1, 'idle once');
    win.fire('keydown');
    assert.deepEqual(events.at(-1), ['active']);
    clock.tick(10000);
    assert.deepEqual(events.at(-1), ['idle', { after: 10 }]);
  });

  test('idleAfter 0 sends no idle events', () => {
    const { clock, names } = setup({ idleAfter: 0 });
    clock.tick(600000);
    assert.ok(!names().includes('idle'));
  });
});

describe('tab visibility', () => {
  test('tab_hidden when hidden, tab_visible with the seconds away when back', () => {
    const { win, doc, clock, events } = setup({ idleAfter: 0 });
    clock.tick(100); // the first scroll measure
    doc.visibilityState = 'hidden';
    doc.fire('visibilitychange');
    clock.tick(42400);
    doc.visibilityState = 'visible';
    doc.fire('visibilitychange');
    assert.deepEqual(events.slice(-2), [['tab_hidden'], ['tab_visible', { away: 42 }]]);
    doc.fire('visibilitychange');
    assert.equal(events.length, 4, 'visible again without being hidden: nothing');
    win.fire('pagehide', { persisted: false });
    doc.visibilityState = 'hidden';
    doc.fire('visibilitychange');
    assert.equal(events.length, 4, 'a page being left is not a hidden tab');
  });

  test('visibility: false reports neither', () => {
    const { doc, names } = setup({ visibility: false });
    doc.visibilityState = 'hidden';
    doc.fire('visibilitychange');
    assert.deepEqual(names(), ['page_view']);
  });
});

describe('exit intent', () => {
  const leave = (doc, clientY = -3, relatedTarget = null) => doc.fire('mouseout', { clientY, relatedTarget });

  test('once per page, when the pointer leaves through the top', () => {
    const { win, doc, clock, names } = setup();
    leave(doc, 300); // through a side or the bottom
    leave(doc, -3, {}); // into another element
    assert.deepEqual(names(), ['page_view']);
    leave(doc);
    leave(doc);
    assert.deepEqual(names(), ['page_view', 'exit_intent']);
    win.history.pushState({}, '', '/next');
    clock.tick(0);
    leave(doc, 0);
    assert.deepEqual(names(), ['page_view', 'exit_intent', 'page_view', 'exit_intent']);
  });

  test('not on touch devices, nor when turned off', () => {
    const touch = fakeWindow();
    touch.matchMedia = (q) => ({ matches: q !== '(pointer: fine)' });
    const events = [];
    startCapture({ win: touch, doc: touch.document, track: (n) => events.push(n), timers: touch.clock, now: touch.clock.now });
    touch.document.fire('mouseout', { clientY: -1, relatedTarget: null });
    assert.deepEqual(events, ['page_view']);
    const { doc, names } = setup({ exitIntent: false });
    leave(doc);
    assert.deepEqual(names(), ['page_view']);
  });
});

test('stop removes every listener and timer and unwraps history', () => {
  const win = fakeWindow();
  const { pushState } = win.history;
  const capture = startCapture({ win, doc: win.document, track() {}, timers: win.clock, now: win.clock.now });
  assert.notEqual(win.history.pushState, pushState);
  win.history.pushState({}, '', '/b');
  win.fire('scroll');
  assert.ok(win.clock.pending > 0 && win.listeners.length > 0 && win.document.listeners.length > 0);
  capture.stop();
  assert.equal(win.clock.pending, 0);
  assert.equal(win.listeners.length, 0);
  assert.equal(win.document.listeners.length, 0);
  assert.equal(win.history.pushState, pushState);
});

describe('clip', () => {
  test('cuts between characters, never inside a surrogate pair', () => {
    const emoji = '\u{1F600}'; // two UTF-16 units
    assert.equal(clip('a'.repeat(511) + emoji), 'a'.repeat(511));
    assert.equal(clip('a'.repeat(510) + emoji + 'x'), 'a'.repeat(510) + emoji);
    assert.equal(clip('b'.repeat(79) + emoji, 80), 'b'.repeat(79));
    assert.equal(clip(null), '');
    assert.equal(clip('short'), 'short');
    for (let n = 1; n < 12; n++) {
      const cut = clip(emoji.repeat(8), n);
      assert.ok(cut.length <= n && cut.length % 2 === 0, `${n}: ${cut.length}`);
    }
  });
});
