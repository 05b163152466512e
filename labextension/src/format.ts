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
 * `span` values fill the width (fewer values leave the left part empty). A value with
 * gaps on both sides is drawn as a short dash, so it shows.
 */
export function sparklinePath(
  values: (number | null)[],
  width: number,
  height: number,
  max: number,
  span: number
): string {
  return sparkRuns(values, width, height, max, span)
    .map(run =>
      run.length === 1
        ? `M${Math.max(0, run[0][0] - 1).toFixed(1)} ${run[0][1].toFixed(1)} L${run[0][0].toFixed(1)} ${run[0][1].toFixed(1)}`
        : run.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)}`).join(' ')
    )
    .join(' ');
}

/** The area under `sparklinePath`'s line, down to the bottom edge (closed paths, one a run). */
export function sparklineArea(
  values: (number | null)[],
  width: number,
  height: number,
  max: number,
  span: number
): string {
  return sparkRuns(values, width, height, max, span)
    .filter(run => run.length > 1)
    .map(
      run =>
        `M${run[0][0].toFixed(1)} ${height.toFixed(1)} ` +
        run.map(([x, y]) => `L${x.toFixed(1)} ${y.toFixed(1)}`).join(' ') +
        ` L${run[run.length - 1][0].toFixed(1)} ${height.toFixed(1)} Z`
    )
    .join(' ');
}

/** The points of each unbroken run of values. */
function sparkRuns(
  values: (number | null)[],
  width: number,
  height: number,
  max: number,
  span: number
): [number, number][][] {
  const n = Math.max(span, values.length, 2);
  const step = width / (n - 1);
  const offset = n - values.length;
  const runs: [number, number][][] = [];
  let run: [number, number][] | null = null;
  values.forEach((v, i) => {
    if (v === null || v === undefined || !isFinite(v)) {
      run = null;
      return;
    }
    const clamped = Math.min(Math.max(v, 0), max);
    const point: [number, number] = [(offset + i) * step, height - (clamped / max) * height];
    if (!run) {
      run = [];
      runs.push(run);
    }
    run.push(point);
  });
  return runs;
}

/** An image or volume as a line: its name, then what else it says that is short. */
export function describeItem(item: Record<string, unknown>): string[] {
  const name = itemName(item);
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

/**
 * What to call an image or volume: its name; an image without one by what it installs (its build
 * steps, as `cellhop.Image(...)` gave them), never by its content hash alone.
 */
export function itemName(item: Record<string, unknown>): string {
  for (const key of ['name', 'tag', 'id']) {
    if (typeof item[key] === 'string' && item[key]) {
      return item[key] as string;
    }
  }
  const steps = Array.isArray(item.steps) ? (item.steps as unknown[]).filter(s => typeof s === 'string') : [];
  if (steps.length) {
    const text = (steps as string[]).join(' · ');
    return text.length > 60 ? text.slice(0, 59) + '…' : text;
  }
  return typeof item.key === 'string' ? `image ${(item.key as string).slice(0, 12)}` : '?';
}
