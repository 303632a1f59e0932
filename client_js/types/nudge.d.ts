// Types of the Nudge browser snippet: the ES module (`import nudge from 'nudge-snippet'`,
// dist/nudge.mjs) and the global `window.nudge` the script tag installs. Checked by `tsc --noEmit`
// over test-types/usage.ts in `npm test`; kept beside src/api.js, which they describe.

/** `nudge.state`: only the snippet changes it. */
export type NudgeState = 'connecting' | 'open' | 'closed' | 'failed';

/** A property value of an event (nested maps and lists are refused by the server). */
export type EventValue = string | number | boolean | null;
export type EventProps = Record<string, EventValue>;

/** Traits of the visitor for `identify`: a flat map. */
export interface Traits {
  [trait: string]: string | number | boolean | null | undefined;
  /** A logged-in user: your own user id, proven by `user_token`. */
  user_id?: string;
  /** The token your backend signed for `user_id` (never a secret key). */
  user_token?: string;
}

export interface InitOptions {
  /** The site's publishable key, `pk_…` (never a secret `sk_…` key). */
  siteKey: string;
  /** The Nudge server; default: the origin nudge.js was loaded from. Required for the ES module. */
  host?: string;
  /** Seconds without input before an `idle` event; 0 turns idle events off. Default 10. */
  idleAfter?: number;
  /** Report clicks on any element, not only on `data-nudge-click` ones. Default false. */
  clickAll?: boolean;
  /** false: draw nothing; your `onMessage` hook does. Default true. */
  render?: boolean;
  /** Report `exit_intent` (desktop only). Default true. */
  exitIntent?: boolean;
  /** Report `tab_hidden` and `tab_visible`. Default true. */
  visibility?: boolean;
  /** 'msgpack': offer binary frames first. Default 'json'. */
  encoding?: 'json' | 'msgpack';
  /** 'memory': write nothing to localStorage or sessionStorage. Default 'local'. */
  storage?: 'local' | 'memory';
  /** Do nothing at all when the browser sends Global Privacy Control. Default false. */
  respectGPC?: boolean;
}

/** A message's call to action. */
export interface CallToAction {
  label: string;
  url?: string;
}

/** A `show` message as the server pushes it (docs/protocol.md), handed to `onMessage`. */
export interface ShowMessage {
  t: 'show';
  seq: number;
  campaign: string;
  variant?: string;
  kind: 'modal' | 'banner' | 'toast' | 'slidein';
  position?: string;
  title?: string;
  body?: string;
  cta?: CallToAction;
  dismiss?: string;
  theme?: Record<string, string>;
  [field: string]: unknown;
}

/** The calls of the loader's one-function style: `nudge('track', 'purchase', {value: 25})`. */
export interface NudgeCall {
  (method: 'init', options: InitOptions): void;
  (method: 'track', name: string, props?: EventProps): void;
  (method: 'identify', traits: Traits): void;
  (method: 'page', props?: EventProps): void;
  (method: 'shutdown'): void;
  (method: 'optOut', out?: boolean): void;
  (method: 'onMessage', fn: (message: ShowMessage) => void): (() => void) | void;
  (method: 'visitorId', fn?: (id: string) => void): string | null | void;
}

export interface Nudge extends NudgeCall {
  /** Connect and start capturing; a second call is ignored until `shutdown()`. */
  init(options: InitOptions): void;
  /** Send an event: a built-in name, or one the campaign file declares. */
  track(name: string, props?: EventProps): void;
  /** Tell the server about the visitor (the built-in `identify` event). */
  identify(traits: Traits): void;
  /** Record a page view by hand (normal loads and history navigations are recorded already). */
  page(props?: EventProps): void;
  /** Close the socket and remove every listener, timer and message on screen. */
  shutdown(): void;
  /** Shut down and forget this visitor; `optOut(false)` opts in again. */
  optOut(out?: boolean): void;
  /** Call `fn` with every new `show` message; returns the function that removes the hook. */
  onMessage(fn: (message: ShowMessage) => void): () => void;
  /**
   * The visitor id (what `POST /api/events` calls `visitor`, and a CDP's `anonymousId`): a
   * string once `init` has run, else null. With `fn`, also calls it with the id as soon as there
   * is one — the way to ask before nudge.js has loaded (the loader queues the call).
   */
  visitorId(fn?: (id: string) => void): string | null;
  /** Read-only: the connection's state. */
  readonly state: NudgeState;
  /** The snippet's version. */
  readonly version: string;
  /** true once nudge.js has replaced the loader's stub. */
  readonly loaded: boolean;
}

/** Install the API on another window (an iframe, a test); returns it. */
export function install(win: Window, env?: Record<string, unknown>): Nudge;

declare const nudge: Nudge;
export default nudge;

declare global {
  interface Window {
    /** The snippet, once the loader ran (a queueing stub until nudge.js has loaded). */
    nudge: Nudge;
  }
  interface WindowEventMap {
    'nudge:message': CustomEvent<ShowMessage>;
    'nudge:state': CustomEvent<NudgeState>;
  }
}
