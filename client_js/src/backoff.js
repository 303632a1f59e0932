/**
 * Delay in ms before reconnect attempt number `step` (0 for the first): "full jitter", a
 * uniformly random delay in [0, min(max, min * 2^step)). Spreading retries over the whole
 * window keeps a fleet of tabs from reconnecting in lock step after a server restart.
 */
export function backoff(step, min, max, random = Math.random) {
  const cap = Math.min(max, min * Math.pow(2, Math.min(step, 30)));
  return Math.floor(random() * cap);
}
