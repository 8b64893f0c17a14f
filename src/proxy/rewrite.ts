/**
 * Text edits of a client's SQL (per-client names, virtual-backend functions) and the map that
 * puts an error's position back where the client wrote it.
 */

/** Replace [start, end) of the original text with `text`. Edits are sorted and do not overlap. */
export interface Edit {
  start: number;
  end: number;
  text: string;
}

/** The text of [from, to) with the edits inside it applied. */
export function applyEdits(sql: string, edits: readonly Edit[], from = 0, to = sql.length): string {
  let out = '';
  let pos = from;
  for (const e of edits) {
    if (e.start < from || e.end > to) continue;
    out += sql.slice(pos, e.start) + e.text;
    pos = e.end;
  }
  return out + sql.slice(pos, to);
}

/**
 * Maps a position (1-based, as Postgres reports it) in `prefix` + the edited text back to the
 * client's text. A position inside an inserted text maps to the start of what it replaced.
 */
export function positionMap(prefix: number, edits: readonly Edit[]): (p: number) => number {
  return (p: number) => {
    let q = p - 1 - prefix;
    if (q < 0) return 1;
    let shift = 0;
    for (const e of edits) {
      const rs = e.start + shift;
      if (q < rs) break;
      if (q < rs + e.text.length) return e.start + 1;
      shift += e.text.length - (e.end - e.start);
    }
    return q - shift + 1;
  };
}

/** Insert edits in order of position. */
export function sortEdits(edits: Edit[]): Edit[] {
  return edits.sort((a, b) => a.start - b.start);
}
