// Pure parsing of the bench guest's serial console (see scripts/vm/guest/init).

export interface ParsedConsole {
  /** The script's exit status; undefined if the end marker never appeared. */
  status: number | undefined;
  /** Everything the script printed between the markers, with CRs removed. */
  output: string;
}

/**
 * The init prints "@@VDX-BEGIN <nonce>@@" and "@@VDX-END <nonce> rc=N@@" around
 * the script. The nonce is fresh per boot, so nothing the script prints (or an
 * earlier boot left in a log) can pass for the end marker.
 */
export function parseGuestConsole(text: string, nonce: string): ParsedConsole {
  const clean = text.replace(/\r/g, '');
  const begin = `@@VDX-BEGIN ${nonce}@@\n`;
  const start = clean.indexOf(begin);
  if (start < 0) return { status: undefined, output: '' };
  const body = clean.slice(start + begin.length);
  const end = new RegExp(`@@VDX-END ${nonce} rc=(\\d+)@@`).exec(body);
  if (!end) return { status: undefined, output: body };
  return { status: Number(end[1]), output: body.slice(0, end.index) };
}
