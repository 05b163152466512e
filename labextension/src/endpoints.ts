/**
 * The Endpoints section: the endpoints the server serves (server_ext/endpoints.py) with their URL (copy),
 * containers (running, starting), requests queued for a container (a scale from zero) and in flight,
 * requests/s, p50/p95 latency, errors, their containers' logs, and delete.
 *
 * The list comes from GET endpoints; `{"type": "endpoint"}` events (at most one a second per endpoint,
 * when its figures changed) fold in through EndpointsState, which is pure (no DOM, no network).
 */

import { URLExt } from '@jupyterlab/coreutils';

import { CellhopApiError } from './api';
import { button, h, message } from './dom';
import { EndpointEvent } from './types';
import { StorageOptions } from './volumes';

export interface EndpointInfo {
  name: string;
  /** Below the server's base URL: "cellhop/endpoints/<name>/". */
  path: string;
  version: number;
  running: number;
  starting: number;
  queued: number;
  inFlight: number;
  requests: number;
  errors: number;
  retries: number;
  requestsPerSecond: number;
  p50: number | null;
  p95: number | null;
  /** Why a container failed to start last (GET only; events do not carry it). */
  lastError: string | null;
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

function ms(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** One endpoint from GET endpoints (`containers` a list) or an event's figures (`containers` a count). */
export function parseEndpoint(raw: unknown): EndpointInfo | null {
  const e = raw as Record<string, unknown> | null;
  if (!e || typeof e.name !== 'string') {
    return null;
  }
  return {
    name: e.name,
    path: typeof e.path === 'string' ? e.path : `cellhop/endpoints/${e.name}/`,
    version: num(e.version),
    running: Array.isArray(e.containers) ? e.containers.length : num(e.containers),
    starting: num(e.starting),
    queued: num(e.queued),
    inFlight: num(e.in_flight),
    requests: num(e.requests),
    errors: num(e.errors),
    retries: num(e.retries),
    requestsPerSecond: num(e.requests_per_second),
    p50: ms(e.p50_ms),
    p95: ms(e.p95_ms),
    lastError: typeof e.last_error === 'string' ? e.last_error : null
  };
}

export function parseEndpoints(answer: unknown): EndpointInfo[] {
  const items = (answer as { endpoints?: unknown })?.endpoints;
  return Array.isArray(items) ? items.map(parseEndpoint).filter((e): e is EndpointInfo => e !== null) : [];
}

/** The endpoints the panel shows: GET endpoints, then the events. */
export class EndpointsState {
  readonly endpoints = new Map<string, EndpointInfo>();

  set(list: EndpointInfo[]): void {
    this.endpoints.clear();
    for (const e of list) {
      this.endpoints.set(e.name, e);
    }
  }

  /** Fold an `endpoint` event in; returns whether anything shown changed. */
  apply(event: EndpointEvent): boolean {
    if (event.type !== 'endpoint' || typeof event.name !== 'string') {
      return false;
    }
    if (event.deleted) {
      return this.endpoints.delete(event.name);
    }
    const figures = parseEndpoint({ name: event.name, ...(event.endpoint ?? {}) });
    if (!figures) {
      return false;
    }
    // events do not carry the last start error: it stays as GET said until a container runs (the server
    // clears it then)
    const lastError = figures.running ? null : this.endpoints.get(event.name)?.lastError ?? null;
    this.endpoints.set(event.name, { ...figures, lastError });
    return true;
  }

  rows(): EndpointInfo[] {
    return [...this.endpoints.values()].sort((a, b) => a.name.localeCompare(b.name));
  }
}

/** "2 ms", "0.4 ms", "1.2 s", or "–" when nothing was measured. */
export function formatLatency(value: number | null): string {
  if (value === null) {
    return '–';
  }
  if (value >= 1000) {
    return `${(value / 1000).toFixed(1)} s`;
  }
  return value >= 10 ? `${Math.round(value)} ms` : `${Number(value.toPrecision(2))} ms`;
}

/** "1 running · 1 starting · 3 queued" (starting and queued only when there are any). */
export function describeContainers(e: EndpointInfo): string {
  const parts = [`${e.running} running`];
  if (e.starting) {
    parts.push(`${e.starting} starting`);
  }
  if (e.queued) {
    parts.push(`${e.queued} queued`);
  }
  return parts.join(' · ');
}

/** "0 in flight · 1.5 req/s · p50 3 ms · p95 12 ms · 7 requests · 0 errors". */
export function describeTraffic(e: EndpointInfo): string {
  const rate = Number(e.requestsPerSecond.toPrecision(3));
  return [
    `${e.inFlight} in flight`,
    `${rate} req/s`,
    `p50 ${formatLatency(e.p50)}`,
    `p95 ${formatLatency(e.p95)}`,
    `${e.requests} request${e.requests === 1 ? '' : 's'}`,
    `${e.errors} error${e.errors === 1 ? '' : 's'}`
  ].join(' · ');
}

/** The endpoint's full URL under the server's base URL (as JupyterLab's settings give it). */
export function endpointUrl(baseUrl: string, path: string): string {
  return URLExt.join(baseUrl, path);
}

/** The logs of GET endpoints/{name}/logs ({container id: text}) as one text, a header per container. */
export function logsText(answer: unknown): string {
  const logs = (answer as { logs?: Record<string, unknown> })?.logs ?? {};
  const parts = Object.entries(logs).map(([id, text]) => `── container ${id.slice(0, 8)} ──\n${String(text ?? '')}`);
  return parts.length ? parts.join('\n') : '(no container of this endpoint runs: its logs start with the next request)';
}

async function copyText(text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch {
    // no clipboard API here (not a secure context, or refused): the older way
  }
  const area = h('textarea', { readonly: true }) as HTMLTextAreaElement;
  area.value = text;
  document.body.append(area);
  area.select();
  try {
    if (!document.execCommand('copy')) {
      throw new Error('the browser refused to copy');
    }
  } finally {
    area.remove();
  }
}

export class EndpointsView {
  constructor(private readonly options: StorageOptions) {
    this.node = h('div', { className: 'jp-CellhopPanel-endpoints' }, h('div', { className: 'jp-CellhopPanel-empty' }, 'Loading…'));
  }

  readonly node: HTMLElement;
  readonly state = new EndpointsState();
  private logsOf: string | null = null;
  private logs = '';
  private error: string | null = null;
  private timer = 0;

  /** Re-read soon (a reconnect, a burst of events). */
  refreshSoon(): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.refresh(), 300);
  }

  async refresh(): Promise<void> {
    try {
      this.state.set(parseEndpoints(await this.options.api.request(['endpoints'])));
      this.error = null;
      if (this.logsOf && this.state.endpoints.has(this.logsOf)) {
        await this.readLogs(this.logsOf);
      }
    } catch (err) {
      const missing = err instanceof CellhopApiError && err.status === 404;
      this.error = missing ? 'This server does not serve endpoints.' : `Could not list endpoints: ${message(err)}`;
    }
    this.render();
  }

  /** An `endpoint` event from the stream. */
  apply(event: EndpointEvent): void {
    if (this.state.apply(event)) {
      this.render();
    }
  }

  private render(): void {
    if (this.error) {
      this.node.replaceChildren(h('div', { className: 'jp-CellhopPanel-empty' }, this.error));
      return;
    }
    const rows = this.state.rows();
    if (!rows.length) {
      this.node.replaceChildren(
        h('div', { className: 'jp-CellhopPanel-empty' }, 'No endpoints: @cellhop.endpoint(...) on a function, then f.deploy("name").')
      );
      return;
    }
    this.node.replaceChildren(h('ul', { className: 'jp-CellhopPanel-list' }, ...rows.map(e => this.row(e))));
  }

  private row(e: EndpointInfo): HTMLElement {
    const url = endpointUrl(this.options.api.settings.baseUrl, e.path);
    const copy = button('Copy URL', 'endpoint-copy', () => void this.copy(url, copy), { title: `Copy ${url}` });
    const li = h(
      'li',
      {
        className: 'jp-CellhopRuns-run jp-CellhopEndpoints-endpoint',
        'data-name': e.name,
        'data-requests': e.requests,
        'data-queued': e.queued,
        title: e.lastError ?? `version ${e.version}`
      },
      h('span', { className: 'jp-CellhopRuns-name' }, e.name),
      h('span', { className: 'jp-CellhopRuns-detail', 'data-value': 'containers' }, describeContainers(e)),
      h('a', { className: 'jp-CellhopEndpoints-url', href: url, target: '_blank', rel: 'noopener', 'data-value': 'url' }, url),
      h('span', { className: 'jp-CellhopRuns-detail', 'data-value': 'traffic' }, describeTraffic(e)),
      e.lastError ? h('span', { className: 'jp-CellhopPanel-error' }, e.lastError) : null,
      h(
        'span',
        { className: 'jp-CellhopPanel-actions' },
        copy,
        button(this.logsOf === e.name ? 'Hide logs' : 'Logs', 'endpoint-logs', () => void this.toggleLogs(e.name)),
        button('Delete', 'endpoint-delete', () => void this.remove(e))
      )
    );
    if (this.logsOf === e.name) {
      li.append(h('pre', { className: 'jp-CellhopRuns-logs' }, this.logs.slice(-20000)));
    }
    return li;
  }

  private async copy(url: string, el: HTMLButtonElement): Promise<void> {
    try {
      await copyText(url);
      el.textContent = 'Copied';
      el.dataset.copied = 'true';
    } catch (err) {
      await this.options.confirm('Copy URL', `Could not copy ${url}: ${message(err)}`, 'OK');
    }
  }

  private async readLogs(name: string): Promise<void> {
    try {
      this.logs = logsText(await this.options.api.request(['endpoints', name, 'logs'], {}, '?tail=200'));
    } catch (err) {
      this.logs = `Could not read the logs: ${message(err)}`;
    }
  }

  private async toggleLogs(name: string): Promise<void> {
    this.logsOf = this.logsOf === name ? null : name;
    if (this.logsOf) {
      await this.readLogs(name);
    }
    this.render();
  }

  private async remove(e: EndpointInfo): Promise<void> {
    const body = `Delete endpoint ${e.name}? Its containers stop, requests in flight fail, and its URL answers 404.`;
    if (!(await this.options.confirm('Delete endpoint', body, 'Delete'))) {
      return;
    }
    try {
      await this.options.api.request(['endpoints', e.name], { method: 'DELETE' });
      this.state.apply({ type: 'endpoint', name: e.name, deleted: true });
    } catch (err) {
      await this.options.confirm('Delete endpoint', `Could not delete endpoint ${e.name}: ${message(err)}`, 'OK');
    }
    await this.refresh();
  }
}
