/**
 * One GPU row of the panel: its index and type, who holds it, utilization and memory meters with their
 * sparklines, power and temperature.
 */

import { Attrs, h } from './dom';
import { formatBytes, formatReading, sparklineArea, sparklinePath } from './format';
import { GpuRow } from './state';

const SPARK_W = 120;
const SPARK_H = 28;
/** Samples a sparkline spans at least (fewer fill the width sooner: never a mark of a pixel or two). */
const SPARK_MIN_SPAN = 20;

function svg(tag: string, attrs: Attrs): SVGElement {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) {
      el.setAttribute(k, String(v));
    }
  }
  return el;
}

/** A GPU's row; `fullSpan` is how many samples the sparklines' history holds at the current interval. */
export function gpuRowNode(row: GpuRow, fullSpan: number): HTMLElement {
  const memFraction = row.memoryUsed !== null && row.memoryTotal ? row.memoryUsed / row.memoryTotal : null;
  const readings = [
    row.powerW !== null ? formatReading(row.powerW, ' W') : null,
    row.temperatureC !== null ? formatReading(row.temperatureC, ' °C') : null
  ].filter(Boolean);
  return h(
    'div',
    {
      className: 'jp-CellhopPanel-gpu',
      'data-uuid': row.uuid,
      'data-node': row.node,
      'data-held': String(row.held),
      'data-user': row.otherUser
    },
    h(
      'div',
      { className: 'jp-CellhopPanel-gpuTitle' },
      h('span', { className: 'jp-CellhopPanel-gpuName' }, `[${row.index}] ${row.type}`),
      row.simulated && h('span', { className: 'jp-CellhopPanel-badge', title: 'No real GPU behind this row' }, 'simulated'),
      h(
        'span',
        { className: 'jp-CellhopPanel-holder' + (row.otherUser ? ' jp-mod-otherUser' : ''), title: row.holderTitle },
        row.holder
      )
    ),
    meter('util', row.utilization !== null ? row.utilization / 100 : null, formatReading(row.utilization, '%'),
      row.history.utilization, 100, fullSpan),
    meter('mem', memFraction, `${formatBytes(row.memoryUsed)} / ${formatBytes(row.memoryTotal)}`, row.history.memory, 1,
      fullSpan),
    readings.length ? h('div', { className: 'jp-CellhopPanel-readings' }, readings.join(' · ')) : null
  );
}

function meter(
  kind: string,
  fraction: number | null,
  text: string,
  history: (number | null)[],
  max: number,
  fullSpan: number
): HTMLElement {
  const bar = h('div', { className: 'jp-CellhopPanel-barFill' });
  bar.style.width = `${Math.round(Math.min(1, Math.max(0, fraction ?? 0)) * 100)}%`;
  const spark = svg('svg', {
    class: 'jp-CellhopPanel-spark',
    width: SPARK_W,
    height: SPARK_H,
    viewBox: `0 0 ${SPARK_W} ${SPARK_H}`,
    preserveAspectRatio: 'none'
  });
  const span = Math.min(fullSpan, Math.max(history.length, SPARK_MIN_SPAN));
  const inner = SPARK_H - 3; // the line stays whole at 0 and at the top
  const area = svg('path', { class: 'jp-CellhopPanel-sparkArea', d: sparklineArea(history, SPARK_W, inner, max, span) });
  const line = svg('path', { class: 'jp-CellhopPanel-sparkLine', d: sparklinePath(history, SPARK_W, inner, max, span) });
  const g = svg('g', { transform: 'translate(0 1.5)' });
  g.append(area, line);
  spark.append(g);
  return h(
    'div',
    { className: `jp-CellhopPanel-meter jp-CellhopPanel-${kind}` },
    h('span', { className: 'jp-CellhopPanel-meterLabel' }, kind === 'util' ? 'util' : 'mem'),
    h('div', { className: 'jp-CellhopPanel-bar', role: 'meter' }, bar),
    h('span', { className: 'jp-CellhopPanel-meterValue', 'data-value': kind }, text),
    spark as unknown as HTMLElement
  );
}
