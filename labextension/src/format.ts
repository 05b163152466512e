/**
 * Numbers as the panel shows them, and sparkline geometry.
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 -> "1.5 KiB"; null -> "–". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !isFinite(bytes)) {
    return '–';
  }
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** Seconds as "42 s", "3 min", "2 h 5 min", "3 d". */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m} min`;
  }
  const h = Math.floor(m / 60);
  if (h < 24) {
    return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  }
  return `${Math.floor(h / 24)} d`;
}

/** A reading with its unit, or "–" when the card does not give it. */
export function formatReading(value: number | null | undefined, unit: string, digits = 0): string {
  return value === null || value === undefined ? '–' : `${value.toFixed(digits)}${unit}`;
}

/**
 * An SVG path ("M x y L x y ...") drawing `values` (gaps where null) scaled into
 * width × height, with `max` at the top. The newest value sits at the right edge;
 * `span` values fill the width (fewer values leave the left part empty).
 */
export function sparklinePath(
  values: (number | null)[],
  width: number,
  height: number,
  max: number,
  span: number
): string {
  const n = Math.max(span, values.length, 2);
  const step = width / (n - 1);
  const offset = n - values.length;
  const parts: string[] = [];
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || v === undefined || !isFinite(v)) {
      pen = false;
      return;
    }
    const clamped = Math.min(Math.max(v, 0), max);
    const x = (offset + i) * step;
    const y = height - (clamped / max) * height;
    parts.push(`${pen ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)}`);
    pen = true;
  });
  return parts.join(' ');
}

/** An image or volume as a line: its name, then what else it says that is short. */
export function describeItem(item: Record<string, unknown>): string[] {
  const name = String(item.name ?? item.tag ?? item.id ?? '?');
  const details: string[] = [];
  for (const key of ['status', 'phase', 'state']) {
    if (typeof item[key] === 'string') {
      details.push(item[key] as string);
      break;
    }
  }
  for (const key of ['size', 'size_bytes', 'bytes']) {
    if (typeof item[key] === 'number') {
      details.push(formatBytes(item[key] as number));
      break;
    }
  }
  if (typeof item.last_used === 'number') {
    details.push(`used ${formatAge(Date.now() / 1000 - (item.last_used as number))} ago`);
  }
  return details.length ? [name, ` · ${details.join(' · ')}`] : [name];
}
