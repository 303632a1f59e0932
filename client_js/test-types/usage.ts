// A typed use of the snippet, as a bundler user writes it; `npm test` runs `tsc --noEmit` over it
// so that the declarations (types/nudge.d.ts) stay true to what the README documents.
import nudge, { install, type Nudge, type ShowMessage } from 'nudge-snippet';

nudge.init({ siteKey: 'pk_live_shop', host: 'https://nudge.shop.example', encoding: 'msgpack' });
nudge.track('add_to_cart', { id: 'mug', name: 'Mug', price: 12.5, quantity: 1 });
nudge.identify({ plan: 'pro', vip: true, user_id: 'u42', user_token: 'v1.1700000000.ab' });
nudge.page({ path: '/checkout' });
const stop: () => void = nudge.onMessage((message: ShowMessage) => {
  const title: string | undefined = message.title;
  if (message.kind === 'modal' && message.cta) console.log(title, message.cta.label);
});
stop();

// The visitor id, for your backend (POST /api/events) or your CDP's anonymousId.
const id: string | null = nudge.visitorId();
nudge.visitorId((visitor: string) => fetch('/session/nudge', { method: 'POST', body: visitor }));
if (id !== null) console.log(id.length);

// The global the script tag installs, and its one-function style.
window.nudge('track', 'purchase', { value: 25 });
window.nudge('visitorId', (visitor) => console.log(visitor));
window.addEventListener('nudge:message', (event) => console.log(event.detail.campaign));
window.addEventListener('nudge:state', (event) => console.log(event.detail === 'open'));
const state: 'connecting' | 'open' | 'closed' | 'failed' = nudge.state;
const other: Nudge = install(window);
console.log(state, other.version);

// What the types refuse.
// @ts-expect-error: a secret key is a string too, but siteKey is required
nudge.init({ host: 'https://nudge.shop.example' });
// @ts-expect-error: props are a flat map
nudge.track('purchase', { items: [{ id: 'mug' }] });
// @ts-expect-error: not a method
nudge('send', 'x');
// @ts-expect-error: visitorId is a string or null, never undefined
const missing: undefined = nudge.visitorId();
