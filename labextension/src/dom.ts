/**
 * A small element builder for the panel's sections (no framework: the panel is plain DOM),
 * and the few elements more than one section draws.
 */

import { formatBytes } from './format';
import { usageFraction } from './storage';

export type Attrs = Record<string, string | number | boolean | null | undefined>;

export function h(tag: string, attrs: Attrs = {}, ...children: (Node | string | null | undefined | false)[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) {
      continue;
    }
    if (k === 'className') {
      el.className = String(v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child);
    }
  }
  return el;
}

/**
 * Make `children` the children of `node`, in order, without taking out and putting back those already
 * there: a form kept across renders (the volume list's "new volume" inputs) keeps its focus and what is
 * being typed when the list beside it is redrawn (`replaceChildren` would detach it, and a refresh
 * landing mid-typing would send the next keys nowhere).
 */
export function replaceKeeping(node: HTMLElement, children: Node[]): void {
  const wanted = new Set(children);
  for (const child of [...node.childNodes]) {
    if (!wanted.has(child)) {
      child.remove();
    }
  }
  children.forEach((child, i) => {
    const here = node.childNodes[i] ?? null;
    if (here !== child) {
      node.insertBefore(child, here);
    }
  });
}

/** A button of the panel's style; `action` lands in `data-action` for tests and styles. */
export function button(label: string, action: string, onClick: () => void, attrs: Attrs = {}): HTMLButtonElement {
  const el = h('button', { className: 'jp-CellhopPanel-button', type: 'button', 'data-action': action, ...attrs }, label);
  el.onclick = onClick;
  return el as HTMLButtonElement;
}

/** An error's message, for an error line. */
export function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A used / quota bar: `fraction` null (no quota) draws no fill. */
export function usageMeter(used: number, quota: number | null, files?: number): HTMLElement {
  const fraction = usageFraction(used, quota);
  const fill = h('div', { className: 'jp-CellhopPanel-barFill' });
  fill.style.width = `${Math.round((fraction ?? 0) * 100)}%`;
  const text =
    `${formatBytes(used)}${quota !== null ? ' / ' + formatBytes(quota) : ' (no quota)'}` +
    (files !== undefined ? ` · ${files} file${files === 1 ? '' : 's'}` : '');
  return h(
    'div',
    {
      className: 'jp-CellhopVolumes-usage',
      'data-full': fraction !== null && fraction >= 0.9 ? 'true' : 'false'
    },
    h('div', { className: 'jp-CellhopPanel-bar', role: 'meter', 'aria-valuenow': fraction ?? undefined }, fill),
    h('span', { className: 'jp-CellhopVolumes-usageText', 'data-value': 'usage' }, text)
  );
}

