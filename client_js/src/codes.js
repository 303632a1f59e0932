// Codes mirrored from docs/protocol.md (wire protocol v1). Keep the two in step: the server's
// errors module is the source of truth, this file is its copy for the browser.

/** Protocol version sent in `hello`. */
export const VERSION = 1;

/** WebSocket close codes. */
export const Close = {
  NORMAL: 1000, // normal close
  GOING_AWAY: 1001, // server restarting: reconnect with backoff
  ABNORMAL: 1006, // connection lost without a close frame (set by the browser)
  TOO_LARGE: 1009, // frame over the server's limit: drop the oversized event, reconnect
  INTERNAL: 1011, // the server failed handling this socket: reconnect with backoff
  RESTART: 1012, // server restarting: reconnect after the reason's "retry=<ms>"
  TRY_AGAIN: 1013, // store unreachable at hello, or this socket read too slowly: reconnect with backoff
  PROTOCOL: 4400, // first frame not hello, unsupported v: stop until reload
  BAD_KEY: 4401, // unknown site key, or a secret key: stop
  ORIGIN: 4403, // origin not allowed for this key: stop
  HELLO_TIMEOUT: 4408, // no hello in time, or idle too long: reconnect with backoff
  TAKEN_OVER: 4409, // another connection resumed this session: stop (the other tab has it)
  MARK_REFUSED: 4410, // the test-device mark is not (or no longer) valid: drop it, connect as yourself
  RATE_LIMITED: 4429, // too many events: reconnect after backoff, resend unacked events
  TOO_MANY: 4430, // too many connections from this address or for this key: reconnect after backoff
  OPTED_OUT: 4451, // the visitor opted out (GPC): stop
};

/** The longest reconnect delay a close reason's `retry=<ms>` hint may ask for. */
export const MAX_RETRY_HINT = 60000;

/** Close codes after which the snippet never reconnects (state `failed`). */
export const FATAL = [Close.PROTOCOL, Close.BAD_KEY, Close.ORIGIN, Close.TAKEN_OVER, Close.OPTED_OUT];

/** `code` values of server `error` frames. The connection stays open after any of them. */
export const ErrorCode = {
  MALFORMED: 'malformed',
  BAD_EVENT: 'bad_event',
  UNKNOWN_EVENT: 'unknown_event',
  PROTOCOL: 'protocol',
};

/** Values of `window.nudge.state`. */
export const State = {
  CONNECTING: 'connecting', // socket opening, or waiting for `welcome`
  OPEN: 'open', // `welcome` received: events flow
  CLOSED: 'closed', // not connected: before init, between attempts, after shutdown
  FAILED: 'failed', // refused for good (a FATAL close code); reload to try again
};

/** Server frames larger than this are refused with 1009; the snippet never sends one. */
export const MAX_FRAME = 64 * 1024;

/** Events in one `evs` frame at most; a larger batch is refused whole. */
export const MAX_BATCH = 100;
