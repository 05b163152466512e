/**
 * The left-sidebar panel: GPUs (their rows: gpuview.ts), Containers, Usage (usageview.ts), Images, Volumes,
 * Secrets, Runs, Schedules (runs.ts), Endpoints (endpoints.ts).
 *
 * Data comes from one event stream (hello, container and metrics events) and, for
 * images, volumes and secrets, their REST routes (Volumes and Secrets are their own views:
 * volumes.ts, secrets.ts). Each section re-renders only when its data
 * changes, so the buttons of the container list stay put while metrics tick.
 */

import { Widget } from '@lumino/widgets';

import { CellhopApi, CellhopApiError } from './api';
import { h } from './dom';
import { EndpointsView } from './endpoints';
import { describeItem, formatAge, itemName } from './format';
import { gpuRowNode } from './gpuview';
import { SecretsView } from './secrets';
import { RunsView, SchedulesView } from './runs';
import { ContainerRow, DashboardState, SessionInfo } from './state';
import { EventStream, StreamStatus } from './stream';
import { CellhopEvent, Container, ContainerEvent, EndpointEvent } from './types';
import { UsageView } from './usageview';
import { StorageOptions, VolumesView } from './volumes';

export interface PanelOptions {
  api: CellhopApi;
  /** Makes the event stream (the panel hands it its callbacks). */
  createStream: (onEvent: (e: CellhopEvent) => void, onStatus: (s: StreamStatus, d?: string) => void) => EventStream;
  sessions: () => SessionInfo[];
  confirmStop: (row: ContainerRow) => Promise<boolean>;
  openLogs: (id: string) => void;
  /** A JupyterLab terminal whose shell runs inside the container. */
  openTerminal?: (id: string) => void;
  notify: (message: string) => void;
  /** A warning for the user (a container of theirs flagged as an idle GPU holder). */
  warn?: (message: string) => void;
  confirm: StorageOptions['confirm'];
  prompt: StorageOptions['prompt'];
  /**
   * A GPU kernel (the launcher's) waits for its GPU: say so, with who holds it, and offer to cancel
   * (`text` null: it is no longer queued, take the message away).
   */
  queued?: (id: string, text: string | null, cancel: () => void) => void;
}

const INTERVALS = [0.5, 1, 2, 5, 10];
export class CellhopPanel extends Widget {
  constructor(options: PanelOptions) {
    super();
    this.options = options;
    this.id = 'cellhop-panel';
    this.addClass('jp-CellhopPanel');
    this.title.caption = 'cellhop: GPUs and containers';

    this.statusEl = h('span', { className: 'jp-CellhopPanel-status', 'data-status': 'connecting' }, 'connecting…');
    this.pauseButton = h('button', { className: 'jp-CellhopPanel-button', type: 'button' }, 'Pause') as HTMLButtonElement;
    this.pauseButton.onclick = () => this.togglePause();
    this.intervalSelect = h('select', { className: 'jp-CellhopPanel-interval', title: 'Metrics interval' }) as HTMLSelectElement;
    for (const s of INTERVALS) {
      this.intervalSelect.append(h('option', { value: s, selected: s === 1 }, `${s} s`));
    }
    this.intervalSelect.onchange = () => this.stream.configure(Number(this.intervalSelect.value));

    this.gpusBody = h('div', { className: 'jp-CellhopPanel-gpus' });
    this.containersBody = h('div', { className: 'jp-CellhopPanel-containers' });
    this.imagesBody = h('div', { className: 'jp-CellhopPanel-images' });
    const storage = { api: options.api, confirm: options.confirm, prompt: options.prompt };
    this.volumes = new VolumesView(storage);
    this.secrets = new SecretsView(storage);
    this.runs = new RunsView(storage);
    this.schedules = new SchedulesView(storage);
    this.endpoints = new EndpointsView(storage);
    this.usage = new UsageView({
      api: options.api,
      containers: () => this.state.containers.values(),
      visible: () => this.isVisible,
      warn: options.warn,
      onTick: () => void this.refreshGpus()
    });

    this.node.append(
      h(
        'div',
        { className: 'jp-CellhopPanel-header' },
        h('span', { className: 'jp-CellhopPanel-title' }, 'cellhop'),
        this.statusEl,
        h('span', { className: 'jp-CellhopPanel-spacer' }),
        this.intervalSelect,
        this.pauseButton
      ),
      this.section('GPUs', 'gpus', this.gpusBody),
      this.section('Containers', 'containers', this.containersBody),
      this.section('Usage', 'usage', this.usage.node, () => void this.usage.refresh()),
      this.section('Images', 'images', this.imagesBody, () => this.refreshList('images')),
      this.section('Volumes', 'volumes', this.volumes.node, () => void this.volumes.refresh()),
      this.section('Secrets', 'secrets', this.secrets.node, () => void this.secrets.refresh()),
      this.section('Runs', 'runs', this.runs.node, () => void this.runs.refresh()),
      this.section('Schedules', 'schedules', this.schedules.node, () => void this.schedules.refresh()),
      this.section('Endpoints', 'endpoints', this.endpoints.node, () => void this.endpoints.refresh())
    );

    this.stream = options.createStream(
      e => this.onEvent(e),
      (s, d) => this.onStatus(s, d)
    );
    this.stream.paused = true; // metrics only while the panel shows (see onAfterShow)
    this.stream.connect();
    this.ageTimer = window.setInterval(() => this.renderContainers(true), 10000);
    this.renderGpus();
    this.renderContainers();
  }

  readonly state = new DashboardState();
  readonly volumes: VolumesView;
  readonly secrets: SecretsView;
  readonly runs: RunsView;
  readonly schedules: SchedulesView;
  readonly endpoints: EndpointsView;
  readonly usage: UsageView;
  readonly stream: EventStream;

  /** The user's pause (the panel also stops metrics while hidden). */
  userPaused = false;

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    window.clearInterval(this.ageTimer);
    this.usage.dispose();
    this.stream.dispose();
    super.dispose();
  }

  /** Scroll to a container's GPUs and row and flash them (a status line's click lands here). */
  highlightContainer(id: string): void {
    const nodes = [
      ...this.node.querySelectorAll(`.jp-CellhopPanel-container[data-id="${CSS.escape(id)}"]`),
      ...[...this.node.querySelectorAll('.jp-CellhopPanel-gpu')].filter(
        el => this.state.gpuRows().find(r => r.uuid === el.getAttribute('data-uuid'))?.holderContainer === id
      )
    ];
    nodes[0]?.scrollIntoView({ block: 'nearest' });
    for (const node of nodes) {
      node.classList.add('jp-mod-highlight');
      window.setTimeout(() => node.classList.remove('jp-mod-highlight'), 2000);
    }
  }

  /** Re-read the list of `route` (Images; Volumes and Secrets refresh themselves). */
  async refreshList(route: 'images' | 'volumes'): Promise<void> {
    if (route === 'volumes') {
      return this.volumes.refresh();
    }
    const body = this.imagesBody;
    try {
      const items = await this.options.api.list(route);
      this.imageNames = new Map(
        items.filter(item => typeof item.key === 'string').map(item => [item.key as string, itemName(item)])
      );
      this.containersSignature = ''; // a container's image shows by its name
      this.renderContainers();
      body.replaceChildren(
        items.length
          ? h(
              'ul',
              { className: 'jp-CellhopPanel-list' },
              ...items.map(item =>
                h('li', { className: 'jp-CellhopPanel-image', 'data-key': String(item.key ?? ''), title: `image ${String(item.key ?? '')}` }, ...describeItem(item))
              )
            )
          : h('div', { className: 'jp-CellhopPanel-empty' }, `No ${route} yet.`)
      );
    } catch (err) {
      const missing = err instanceof CellhopApiError && err.status === 404;
      body.replaceChildren(
        h(
          'div',
          { className: 'jp-CellhopPanel-empty' },
          missing ? `This server does not serve ${route} yet.` : `Could not list ${route}: ${(err as Error).message}`
        )
      );
    }
  }

  protected onAfterShow(): void {
    this.updateMetricsWanted();
    void this.refreshList('images');
    void this.volumes.refresh();
    void this.secrets.refresh();
    void this.runs.refresh();
    void this.schedules.refresh();
    void this.endpoints.refresh();
    void this.usage.refresh();
  }

  /** Re-read GET gpus: another user's leases change with no event here. */
  private async refreshGpus(): Promise<void> {
    try {
      this.state.setInventory(await this.options.api.gpus());
      this.renderGpus();
    } catch {
      // the event stream says when the server is away
    }
  }

  protected onAfterHide(): void {
    this.updateMetricsWanted();
  }

  private updateMetricsWanted(): void {
    const want = this.isVisible && !this.userPaused;
    if (want && this.stream.paused) {
      this.stream.resume();
    } else if (!want && !this.stream.paused) {
      this.stream.pause();
    }
  }

  private togglePause(): void {
    this.userPaused = !this.userPaused;
    this.pauseButton.textContent = this.userPaused ? 'Resume' : 'Pause';
    this.pauseButton.setAttribute('aria-pressed', String(this.userPaused));
    this.updateMetricsWanted();
  }

  private section(title: string, key: string, body: HTMLElement, refresh?: () => void): HTMLElement {
    const header = h('div', { className: 'jp-CellhopPanel-sectionHeader' }, h('h3', {}, title));
    if (refresh) {
      const button = h('button', { className: 'jp-CellhopPanel-button', type: 'button', title: `Refresh ${title}` }, '↻');
      button.onclick = refresh;
      header.append(button);
    }
    return h('section', { className: 'jp-CellhopPanel-section', 'data-section': key }, header, body);
  }

  private onEvent(event: CellhopEvent): void {
    if (event.type === 'container') {
      this.onContainerEvent(event as ContainerEvent);
    }
    if (event.type === 'hello') {
      this.runs.refreshSoon(); // (re)connected: runs that ended while the stream was away
      this.endpoints.refreshSoon();
      this.usage.refreshSoon();
    }
    if (!this.state.apply(event)) {
      if (event.type === 'run') {
        this.runs.refreshSoon();
      } else if (event.type === 'endpoint') {
        this.endpoints.apply(event as unknown as EndpointEvent);
      } else if (/^secret/.test(event.type)) {
        void this.secrets.refresh();
      } else if (/^(image|volume)/.test(event.type)) {
        void this.refreshList(event.type.startsWith('image') ? 'images' : 'volumes');
      }
      return;
    }
    if (event.type === 'hello' && this.state.interval) {
      this.intervalSelect.value = String(this.stream.interval);
    }
    if (event.type !== 'metrics') {
      this.renderContainers();
      this.usage.containersChanged();
    }
    this.renderGpus();
  }

  /** A container's volumes may be new (made on first use); an image the panel does not know yet is
   * listed; a GPU kernel of the launcher waiting for its GPU is told about. */
  private onContainerEvent(event: ContainerEvent): void {
    const c = event.container;
    if (!c) {
      return;
    }
    if ((event.phase === 'queued' || event.phase === 'starting') && (c.volumes?.length ?? 0) > 0) {
      void this.volumes.refresh();
    }
    if (c.image && !this.imageNames.has(c.image)) {
      void this.refreshList('images');
    }
    if (this.options.queued && /^kernel /.test(c.label || '')) {
      const cancel = () => void this.options.api.stop(c.id).catch(() => undefined);
      this.options.queued(c.id, event.phase === 'queued' ? this.queueText(c) : null, cancel);
    }
  }

  /** "Python 3 · H100 waits for H100: next in line; held by gpu-demo.ipynb · %%remote 6cdf09a5". */
  private queueText(c: Container): string {
    const types = new Set((c.gpu_request || '').split(',').map(t => t.split(':')[0].trim()));
    const holders = [
      ...new Set(
        this.state
          .gpuRows(this.options.sessions())
          .filter(r => r.held && (types.has(r.type) || types.has('any')))
          .map(r => r.holder)
      )
    ];
    const position = c.queue_position;
    const place = !position ? 'next in line' : `${position} request${position > 1 ? 's' : ''} ahead`;
    const kernel = (c.label || 'kernel').replace(/^kernel /, '');
    return `The kernel ${kernel} waits for a GPU (${c.gpu_request}): ${place}` + (holders.length ? `; held by ${holders.join(', ')}` : '') + '.';
  }

  private onStatus(status: StreamStatus, detail?: string): void {
    const text =
      status === 'connected'
        ? 'live'
        : status === 'reconnecting'
          ? `reconnecting…${detail ? ' (' + detail + ')' : ''}`
          : status === 'connecting'
            ? 'connecting…'
            : 'closed';
    this.statusEl.textContent = status === 'reconnecting' ? 'reconnecting…' : text;
    this.statusEl.title = text;
    this.statusEl.dataset.status = status;
  }

  private renderGpus(): void {
    const rows = this.state.gpuRows();
    const empty = this.state.emptyGpuMessage();
    const children: HTMLElement[] = [];
    if (this.state.inventory?.simulated && rows.length) {
      children.push(
        h('div', { className: 'jp-CellhopPanel-note' }, 'Simulated inventory: no real GPU behind these rows.')
      );
    }
    if (empty) {
      children.push(h('div', { className: 'jp-CellhopPanel-empty', 'data-empty': 'gpus' }, empty));
    } else if (!this.state.inventory) {
      children.push(h('div', { className: 'jp-CellhopPanel-empty' }, 'Waiting for the control plane…'));
    }
    if (this.state.metricsError) {
      children.push(h('div', { className: 'jp-CellhopPanel-error' }, this.state.metricsError));
    }
    for (const group of this.state.gpuGroups(this.options.sessions())) {
      if (group.node) {
        children.push(
          h('div', { className: 'jp-CellhopPanel-node', 'data-node': group.node, title: 'Ray node' }, `node ${group.node}`)
        );
      }
      const span = Math.max(2, Math.round(this.state.historySeconds / (this.stream.interval || 1)));
      children.push(...group.rows.map(row => gpuRowNode(row, span)));
    }
    this.gpusBody.replaceChildren(...children);
  }

  renderContainers(agesOnly = false): void {
    const rows = this.state.containerRows(Date.now() / 1000, this.options.sessions(), this.imageNames);
    const signature = JSON.stringify(rows.map(r => ({ ...r, ageSeconds: 0 })));
    if (agesOnly || signature === this.containersSignature) {
      for (const row of rows) {
        const age = this.containersBody.querySelector(`[data-id="${row.id}"] .jp-CellhopPanel-age`);
        if (age) {
          age.textContent = formatAge(row.ageSeconds);
        }
      }
      return;
    }
    this.containersSignature = signature;
    if (!rows.length) {
      this.containersBody.replaceChildren(
        h('div', { className: 'jp-CellhopPanel-empty' }, 'No containers. Run a %%remote cell to start one.')
      );
      return;
    }
    const live = rows.filter(r => r.phase !== 'exited');
    const exited = rows.filter(r => r.phase === 'exited');
    const children: HTMLElement[] = live.map(row => this.containerRow(row));
    if (!live.length) {
      children.push(h('div', { className: 'jp-CellhopPanel-empty' }, 'No running containers.'));
    }
    if (exited.length) {
      // ended ones keep their reasons and logs, out of the way: collapsed unless the user opened them
      const failed = exited.filter(r => r.failed).length;
      const details = h(
        'details',
        { className: 'jp-CellhopPanel-exited', open: this.exitedOpen || null },
        h(
          'summary',
          { 'data-failed': String(failed > 0) },
          `${exited.length} exited` + (failed ? ` (${failed} failed)` : '')
        ),
        ...exited.map(row => this.containerRow(row))
      ) as HTMLDetailsElement;
      details.addEventListener('toggle', () => (this.exitedOpen = details.open));
      children.push(details);
    }
    this.containersBody.replaceChildren(...children);
  }

  private containerRow(row: ContainerRow): HTMLElement {
    const stop = h(
      'button',
      { className: 'jp-CellhopPanel-button jp-mod-stop', type: 'button', 'data-action': 'stop', disabled: !row.stoppable },
      'Stop'
    );
    stop.onclick = () => void this.stopContainer(row);
    const logs = h('button', { className: 'jp-CellhopPanel-button', type: 'button', 'data-action': 'logs' }, 'Logs');
    logs.onclick = () => this.options.openLogs(row.id);
    const terminal = h(
      'button',
      { className: 'jp-CellhopPanel-button', type: 'button', 'data-action': 'terminal', disabled: row.phase !== 'ready',
        title: 'Open a terminal whose shell runs inside this container' },
      'Terminal'
    );
    terminal.onclick = () => this.options.openTerminal?.(row.id);
    return h(
      'div',
      { className: 'jp-CellhopPanel-container', 'data-id': row.id, 'data-phase': row.phase },
      h(
        'div',
        { className: 'jp-CellhopPanel-containerTitle' },
        h('span', { className: 'jp-CellhopPanel-containerId', title: row.id }, row.id.slice(0, 8)),
        h('span', { className: 'jp-CellhopPanel-phase', 'data-phase': row.phase }, row.phase),
        h('span', { className: 'jp-CellhopPanel-containerGpus' }, row.gpus),
        row.idleHolder &&
          h('span', { className: 'jp-CellhopPanel-badge jp-mod-idleHolder', 'data-badge': 'idle-holder', title: row.idleHolder }, 'idle GPU holder')
      ),
      h(
        'div',
        { className: 'jp-CellhopPanel-containerMeta' },
        h('span', { title: 'image' }, row.image),
        ' · ',
        h('span', { className: 'jp-CellhopPanel-age', title: 'age' }, formatAge(row.ageSeconds)),
        ' · ',
        h('span', { className: 'jp-CellhopPanel-owner', title: row.owner }, row.notebook ?? row.owner),
        row.busy ? ' · ' : null,
        row.busy ? h('span', { className: 'jp-CellhopPanel-busy', title: 'mean GPU use so far' }, row.busy) : null,
        row.node ? ' · ' : null,
        row.node ? h('span', { className: 'jp-CellhopPanel-containerNode', title: 'Ray node' }, `node ${row.node}`) : null
      ),
      row.idleHolder ? h('div', { className: 'jp-CellhopPanel-idleHolder' }, row.idleHolder) : null,
      row.exit ? h('div', { className: 'jp-CellhopPanel-exit', 'data-failed': String(row.failed) }, row.exit) : null,
      h('div', { className: 'jp-CellhopPanel-actions' }, stop, logs, this.options.openTerminal ? terminal : null)
    );
  }

  private async stopContainer(row: ContainerRow): Promise<void> {
    if (!(await this.options.confirmStop(row))) {
      return;
    }
    try {
      const container = await this.options.api.stop(row.id);
      this.state.apply({ type: 'container', id: container.id, phase: container.phase, time: Date.now() / 1000, container });
      this.renderContainers();
      this.renderGpus();
    } catch (err) {
      this.options.notify(`Could not stop container ${row.id.slice(0, 8)}: ${(err as Error).message}`);
    }
  }

  private readonly options: PanelOptions;
  private readonly statusEl: HTMLElement;
  private readonly pauseButton: HTMLButtonElement;
  private readonly intervalSelect: HTMLSelectElement;
  private readonly gpusBody: HTMLElement;
  private readonly containersBody: HTMLElement;
  private readonly imagesBody: HTMLElement;
  private readonly ageTimer: number;
  private containersSignature = '';
  private exitedOpen = false;
  /** Image key -> what to call it (its name, or what it installs), from the Images list. */
  private imageNames = new Map<string, string>();
}
