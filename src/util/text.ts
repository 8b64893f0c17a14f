/** Small text and timing helpers shared by every layer (no imports, no state). */

/** SQL (or any text) on one line, whitespace folded, cut to `max` characters with `...` for reports. */
export function oneLine(text: string, max = 100): string {
  const s = text.replace(/\s+/g, ' ').trim();
  return s.length > max ? s.slice(0, max - 3) + '...' : s;
}

/** Resolve after `ms` milliseconds (a bounded retry's pause; never a substitute for an event). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
