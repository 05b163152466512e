/** The followed log's text (logview.ts): pure functions, tested without a browser. */

/** The lines of `text` holding `query` (case-insensitive), or all of it when the query is empty. */
export function matchingLines(text: string, query: string): string {
  if (!query) {
    return text;
  }
  const wanted = query.toLowerCase();
  return text
    .split('\n')
    .filter(line => line.toLowerCase().includes(wanted))
    .join('\n');
}

/** Split a growing buffer of JSON lines: the complete lines parsed, and the rest kept for later. */
export function takeLines(buffer: string): { lines: any[]; rest: string } {
  const parts = buffer.split('\n');
  const rest = parts.pop() ?? '';
  const lines = parts.filter(p => p.trim()).map(p => JSON.parse(p));
  return { lines, rest };
}
