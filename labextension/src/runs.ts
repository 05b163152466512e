/**
 * The Runs and Schedules sections: runs the server owns (detached runs, REST jobs, schedules' firings,
 * notebooks as jobs; server_ext/runs.py) with their status, GPU, duration and attempts, their logs, their
 * result (as JSON, or the executed notebook) to download, and cancel; schedules with pause, resume, delete.
 * They re-read their lists when a `{"type": "run"}` event says a run changed (panel.ts).
 */

import { CellhopApiError } from './api';
import { button, h, message } from './dom';
import { formatAge } from './format';
import { StorageOptions } from './volumes';

export interface RunInfo {
  id: string;
  kind: string;
  name: string;
  status: string;
  gpu: string;
  gpus: string[];
  started: number | null;
  duration: number | null;
  attempts: { status: string; error: string | null }[];
  error: string | null;
  schedule: string | null;
}

export interface ScheduleInfo {
  id: string;
  name: string;
  kind: string;
  cron: string | null;
  every: number | null;
  paused: boolean;
  fired: number;
  next: number | null;
}

const LIVE = new Set(['queued', 'running']);

/** The runs of an answer of GET runs, each with the fields the section shows (others dropped). */
export function parseRuns(answer: unknown): RunInfo[] {
  const runs = (answer as { runs?: unknown })?.runs;
  if (!Array.isArray(runs)) {
    return [];
  }
  return runs
    .filter(r => r && typeof r.id === 'string' && typeof r.status === 'string')
    .map(r => ({
      id: r.id,
      kind: String(r.kind ?? 'function'),
      name: String(r.name ?? ''),
      status: r.status,
      gpu: String(r.gpu ?? 'none'),
      gpus: Array.isArray(r.gpus) ? r.gpus.map(String) : [],
      started: typeof r.started === 'number' ? r.started : null,
      duration: typeof r.duration === 'number' ? r.duration : null,
      attempts: Array.isArray(r.attempts) ? r.attempts : [],
      error: typeof r.error === 'string' ? r.error : null,
      schedule: typeof r.schedule === 'string' ? r.schedule : null
    }));
}

/** One line about a run: "H100 · 12 s · 2 attempts". */
export function describeRun(run: RunInfo): string {
  const gpu = run.gpus.length ? run.gpus.join(', ') : run.gpu === 'none' ? 'CPU' : run.gpu;
  const parts = [gpu];
  if (run.duration !== null) {
    parts.push(formatAge(run.duration));
  }
  if (run.attempts.length > 1) {
    parts.push(`${run.attempts.length} attempts`);
  }
  return parts.join(' · ');
}

/** When a schedule fires: its cron expression or "every 15 min". */
export function scheduleWhen(s: ScheduleInfo): string {
  return s.cron ? `cron ${s.cron}` : `every ${formatAge(s.every ?? 0)}`;
}

export function parseSchedules(answer: unknown): ScheduleInfo[] {
  const items = (answer as { schedules?: unknown })?.schedules;
  return Array.isArray(items) ? items.filter(s => s && typeof s.id === 'string') : [];
}

function download(name: string, text: string, type: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  (a as HTMLAnchorElement).click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export class RunsView {
  constructor(private readonly options: StorageOptions) {
    this.node = h('div', { className: 'jp-CellhopPanel-runs' }, h('div', { className: 'jp-CellhopPanel-empty' }, 'Loading…'));
  }

  readonly node: HTMLElement;
  private runs: RunInfo[] = [];
  private logsOf: string | null = null;
  private logs = '';
  private timer = 0;

  /** Re-read soon (events come in bursts). */
  refreshSoon(): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.refresh(), 300);
  }

  async refresh(): Promise<void> {
    try {
      this.runs = parseRuns(await this.options.api.request(['runs']));
      if (this.logsOf) {
        this.logs = ((await this.options.api.request(['runs', this.logsOf, 'logs'])) as { logs: string }).logs;
      }
      this.render();
    } catch (err) {
      const missing = err instanceof CellhopApiError && err.status === 404;
      this.node.replaceChildren(
        h('div', { className: 'jp-CellhopPanel-empty' }, missing ? 'This server does not keep runs.' : `Could not list runs: ${message(err)}`)
      );
    }
  }

  private render(): void {
    if (!this.runs.length) {
      this.node.replaceChildren(
        h('div', { className: 'jp-CellhopPanel-empty' }, 'No runs yet: f.spawn(x, detach=True), %%remote --detach or cellhop run NB.ipynb.')
      );
      return;
    }
    this.node.replaceChildren(
      h('ul', { className: 'jp-CellhopPanel-list' }, ...this.runs.slice(0, 50).map(run => this.row(run)))
    );
  }

  private row(run: RunInfo): HTMLElement {
    const actions = h('span', { className: 'jp-CellhopPanel-actions' });
    actions.append(button(this.logsOf === run.id ? 'Hide logs' : 'Logs', 'run-logs', () => void this.toggleLogs(run.id)));
    if (run.status === 'succeeded' || (run.kind === 'notebook' && run.status === 'failed')) {
      actions.append(button('Result', 'run-result', () => void this.result(run)));
    }
    if (LIVE.has(run.status)) {
      actions.append(button('Cancel', 'run-cancel', () => void this.cancel(run)));
    }
    const li = h(
      'li',
      { className: 'jp-CellhopRuns-run', 'data-id': run.id, 'data-status': run.status, title: run.error ?? run.id },
      h('span', { className: `jp-CellhopRuns-status jp-mod-${run.status}` }, run.status),
      h('span', { className: 'jp-CellhopRuns-name' }, `${run.kind} ${run.name}`),
      h('span', { className: 'jp-CellhopRuns-detail' }, describeRun(run)),
      actions
    );
    if (this.logsOf === run.id) {
      li.append(h('pre', { className: 'jp-CellhopRuns-logs' }, this.logs.slice(-20000) || '(no output yet)'));
    }
    return li;
  }

  private async toggleLogs(id: string): Promise<void> {
    this.logsOf = this.logsOf === id ? null : id;
    await this.refresh();
  }

  private async result(run: RunInfo): Promise<void> {
    try {
      const view = (await this.options.api.request(['runs', run.id])) as { result?: unknown; partial?: unknown };
      const value = view.result ?? view.partial;
      if (value === undefined || value === null) {
        await this.options.confirm('No JSON result', `Run ${run.name}'s result is not JSON: read it in a notebook with cellhop.Run("${run.id}").result().`, 'OK');
        return;
      }
      const notebook = run.kind === 'notebook';
      download(notebook ? run.name.replace(/\.ipynb$/, '') + '.out.ipynb' : `${run.id}.json`, JSON.stringify(value, null, 1),
        notebook ? 'application/x-ipynb+json' : 'application/json');
    } catch (err) {
      await this.options.confirm('Result', `Could not read the result: ${message(err)}`, 'OK');
    }
  }

  private async cancel(run: RunInfo): Promise<void> {
    if (!(await this.options.confirm('Cancel run', `Cancel run ${run.name} (${run.id})? Its container stops.`, 'Cancel run'))) {
      return;
    }
    try {
      await this.options.api.request(['runs', run.id], { method: 'DELETE' });
    } finally {
      await this.refresh();
    }
  }
}

export class SchedulesView {
  constructor(private readonly options: StorageOptions) {
    this.node = h('div', { className: 'jp-CellhopPanel-schedules' }, h('div', { className: 'jp-CellhopPanel-empty' }, 'Loading…'));
  }

  readonly node: HTMLElement;

  async refresh(): Promise<void> {
    try {
      const items = parseSchedules(await this.options.api.request(['schedules']));
      this.node.replaceChildren(
        items.length
          ? h('ul', { className: 'jp-CellhopPanel-list' }, ...items.map(s => this.row(s)))
          : h('div', { className: 'jp-CellhopPanel-empty' }, 'No schedules: cellhop.schedule(f, every="15m") or cellhop schedule NB.ipynb --cron ….')
      );
    } catch (err) {
      this.node.replaceChildren(h('div', { className: 'jp-CellhopPanel-empty' }, `Could not list schedules: ${message(err)}`));
    }
  }

  private row(s: ScheduleInfo): HTMLElement {
    const next = s.next ? `next in ${formatAge(s.next - Date.now() / 1000)}` : 'paused';
    return h(
      'li',
      { className: 'jp-CellhopRuns-schedule', 'data-id': s.id, 'data-paused': String(s.paused), title: s.id },
      h('span', { className: 'jp-CellhopRuns-name' }, `${s.kind} ${s.name}`),
      h('span', { className: 'jp-CellhopRuns-detail' }, `${scheduleWhen(s)} · fired ${s.fired} · ${next}`),
      h(
        'span',
        { className: 'jp-CellhopPanel-actions' },
        button(s.paused ? 'Resume' : 'Pause', s.paused ? 'schedule-resume' : 'schedule-pause', () => void this.patch(s, !s.paused)),
        button('Delete', 'schedule-delete', () => void this.remove(s))
      )
    );
  }

  private async patch(s: ScheduleInfo, paused: boolean): Promise<void> {
    try {
      await this.options.api.request(['schedules', s.id], { method: 'PATCH', body: JSON.stringify({ paused }) });
    } finally {
      await this.refresh();
    }
  }

  private async remove(s: ScheduleInfo): Promise<void> {
    if (!(await this.options.confirm('Delete schedule', `Delete schedule ${s.name} (${scheduleWhen(s)})? Its past runs stay.`, 'Delete'))) {
      return;
    }
    try {
      await this.options.api.request(['schedules', s.id], { method: 'DELETE' });
    } finally {
      await this.refresh();
    }
  }
}

/** The body of POST runs for an open notebook: its cells without their outputs (they are made again). */
export function notebookRunRequest(path: string, model: unknown, gpu: string): Record<string, unknown> {
  const nb = JSON.parse(JSON.stringify(model)) as { cells?: Record<string, unknown>[] };
  for (const cell of nb.cells ?? []) {
    if (cell.cell_type === 'code') {
      cell.outputs = [];
      cell.execution_count = null;
    }
  }
  const name = path.split('/').pop() ?? path;
  return { notebook: nb, name, gpu: gpu.trim() || null };
}
