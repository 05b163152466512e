/**
 * The panel's data: what the event stream and the REST routes said, folded into rows to show.
 *
 * Pure (no DOM, no network): the panel feeds it events and renders its rows.
 */

import {
  CellhopEvent,
  Container,
  ContainerEvent,
  Gpu,
  GpusView,
  HelloEvent,
  MetricsEvent,
  Sample
} from './types';
import { describeBusy, isOtherUser, otherUserText } from './usage';

/** Phases in which a container holds its GPUs. */
const HOLDING: ReadonlySet<string> = new Set(['starting', 'ready', 'stopping']);

export interface History {
  time: number[];
  utilization: (number | null)[];
  memory: (number | null)[]; // fraction of memory_total in use, 0..1
}

export interface GpuRow {
  uuid: string;
  index: number;
  type: string;
  simulated: boolean;
  /** The Ray node (its IP) holding it; null on the local runtime. */
  node: string | null;
  /** Who holds it, in words ("free" when nobody does). */
  holder: string;
  /** The same in full, for a tooltip: notebook, kernel, what and which container. */
  holderTitle: string;
  holderContainer: string | null;
  /** Whether anyone holds it (this user's container, or another Unix user). */
  held: boolean;
  /** The other Unix user holding it; null when free or this user's own. */
  otherUser: string | null;
  utilization: number | null;
  memoryUsed: number | null;
  memoryTotal: number;
  powerW: number | null;
  temperatureC: number | null;
  history: History;
}

/** GPU rows under one node; `node` is null for GPUs without one (the local runtime). */
export interface GpuGroup {
  node: string | null;
  rows: GpuRow[];
}

export interface ContainerRow {
  id: string;
  phase: string;
  gpus: string;
  image: string;
  /** The Ray node (its IP) it runs on; null on the local runtime (or not placed yet). */
  node: string | null;
  ageSeconds: number;
  owner: string;
  /** The notebook its owning kernel runs, when a session of this server has it. */
  notebook: string | null;
  label: string;
  exit: string | null;
  /** Whether it ended in failure (killed, out of memory, a non-zero exit of its own); a stop, an idle
   * scaledown or a clean exit is a normal end. */
  failed: boolean;
  stoppable: boolean;
  /** Why it is flagged as an idle GPU holder (a live container only); null if not. */
  idleHolder: string | null;
  /** Its GPUs' mean use so far ("2% busy"); null where none was measured. */
  busy: string | null;
}

/** A running session of this server: the kernel id and the path of its notebook. */
export interface SessionInfo {
  kernelId: string;
  path: string;
}

export class DashboardState {
  constructor(options: { historySeconds?: number } = {}) {
    this.historySeconds = options.historySeconds ?? 120;
  }

  readonly historySeconds: number;
  inventory: GpusView | null = null;
  containers = new Map<string, Container>();
  latest = new Map<string, Sample>();
  history = new Map<string, History>();
  metricsError: string | null = null;
  lastError: string | null = null;
  interval: number | null = null;

  /** Fold one event in; returns whether anything shown changed. */
  apply(event: CellhopEvent): boolean {
    switch (event.type) {
      case 'hello':
        this.applyHello(event as HelloEvent);
        return true;
      case 'container': {
        const e = event as ContainerEvent;
        if (e.removed) {
          this.containers.delete(e.id);
        } else {
          this.applyContainer(e.container);
        }
        return true;
      }
      case 'metrics':
        this.applyMetrics(event as MetricsEvent);
        return true;
      case 'error':
        this.lastError = String((event as { message?: unknown }).message ?? 'error');
        return true;
      default:
        return false;
    }
  }

  /** `GET gpus` (also the start of every connection). */
  setInventory(view: GpusView): void {
    this.inventory = view;
    const known = new Set(view.gpus.map(g => g.uuid));
    for (const uuid of [...this.latest.keys()]) {
      if (!known.has(uuid)) {
        this.latest.delete(uuid);
        this.history.delete(uuid);
      }
    }
  }

  /** `GET containers`: the whole list. */
  setContainers(containers: Container[]): void {
    this.containers = new Map(containers.map(c => [c.id, c]));
  }

  private applyHello(event: HelloEvent): void {
    this.setInventory(event.gpus);
    this.setContainers(event.containers ?? []);
    this.interval = event.interval ?? null;
    this.lastError = null;
  }

  private applyContainer(container: Container): void {
    this.containers.set(container.id, container);
    if (!this.inventory) {
      return;
    }
    const mine = new Set((container.gpus ?? []).map(g => g.uuid));
    const holds = HOLDING.has(container.phase);
    this.inventory = {
      ...this.inventory,
      gpus: this.inventory.gpus.map((gpu): Gpu => {
        if (holds && mine.has(gpu.uuid)) {
          return { ...gpu, holder: { owner: container.owner, container: container.id } };
        }
        if (!holds && gpu.holder?.container === container.id) {
          return { ...gpu, holder: null };
        }
        return gpu;
      })
    };
  }

  private applyMetrics(event: MetricsEvent): void {
    this.metricsError = event.error ?? null;
    const horizon = event.time - this.historySeconds;
    for (const sample of event.gpus ?? []) {
      this.latest.set(sample.uuid, sample);
      let h = this.history.get(sample.uuid);
      if (!h) {
        h = { time: [], utilization: [], memory: [] };
        this.history.set(sample.uuid, h);
      }
      const total = sample.memory_total ?? this.memoryTotal(sample.uuid);
      h.time.push(event.time);
      h.utilization.push(sample.utilization ?? null);
      h.memory.push(sample.memory_used !== undefined && total ? sample.memory_used / total : null);
      let drop = 0;
      while (drop < h.time.length && h.time[drop] < horizon) {
        drop++;
      }
      if (drop) {
        h.time.splice(0, drop);
        h.utilization.splice(0, drop);
        h.memory.splice(0, drop);
      }
    }
  }

  private memoryTotal(uuid: string): number {
    return this.inventory?.gpus.find(g => g.uuid === uuid)?.memory_total ?? 0;
  }

  /** The nodes the GPUs are on, in order; empty on the local runtime (no GPU has a node). */
  nodes(): string[] {
    const nodes = new Set<string>();
    for (const gpu of this.inventory?.gpus ?? []) {
      if (gpu.node) {
        nodes.add(gpu.node);
      }
    }
    return [...nodes].sort(compareNodes);
  }

  /** One row per GPU, by node (GPUs without one first), then index (indices count per node). */
  gpuRows(sessions: SessionInfo[] = [], now = Date.now() / 1000): GpuRow[] {
    const gpus = [...(this.inventory?.gpus ?? [])].sort(
      (a, b) => compareNodes(a.node || '', b.node || '') || a.index - b.index
    );
    return gpus.map(gpu => {
      const s = this.latest.get(gpu.uuid);
      return {
        uuid: gpu.uuid,
        index: gpu.index,
        type: gpu.type,
        simulated: Boolean(gpu.simulated),
        node: gpu.node || null,
        holder: holderText(gpu, this.containers, sessions, now),
        holderTitle: holderTitle(gpu, this.containers, sessions, now),
        holderContainer: gpu.holder?.container || null,
        held: Boolean(gpu.holder),
        otherUser: isOtherUser(gpu.holder) ? gpu.holder.user : null,
        utilization: s?.utilization ?? null,
        memoryUsed: s?.memory_used ?? null,
        memoryTotal: s?.memory_total ?? gpu.memory_total,
        powerW: s?.power_w ?? null,
        temperatureC: s?.temperature_c ?? null,
        history: this.history.get(gpu.uuid) ?? { time: [], utilization: [], memory: [] }
      };
    });
  }

  /**
   * The GPU rows grouped by node: one group (node null) when no GPU has a node, so the
   * local runtime shows no node at all; otherwise one group per node, in order.
   */
  gpuGroups(sessions: SessionInfo[] = []): GpuGroup[] {
    const rows = this.gpuRows(sessions);
    if (!rows.some(r => r.node)) {
      return rows.length ? [{ node: null, rows }] : [];
    }
    const groups: GpuGroup[] = [];
    for (const row of rows) {
      const last = groups[groups.length - 1];
      if (last && last.node === row.node) {
        last.rows.push(row);
      } else {
        groups.push({ node: row.node, rows: [row] });
      }
    }
    return groups;
  }

  /** Why the GPU list is empty, in words; null when there are GPUs (or nothing is known yet). */
  emptyGpuMessage(): string | null {
    if (!this.inventory || this.inventory.gpus.length) {
      return null;
    }
    const why = this.inventory.reason || 'no GPU was found on this host';
    return `No GPUs: ${why}. %%remote cells run in CPU-only containers.`;
  }

  /** Containers, newest first; live ones before exited ones. */
  containerRows(now: number, sessions: SessionInfo[] = [], imageNames: Map<string, string> = new Map()): ContainerRow[] {
    const rows = [...this.containers.values()].map(c => ({
      id: c.id,
      phase: c.standby && c.phase === 'ready'
        ? 'standby'
        : c.phase === 'queued' && c.queue_position
          ? `queued (${c.queue_position} ahead)`
          : c.phase,
      gpus: describeGpus(c),
      image: c.image ? imageNames.get(c.image) ?? c.image : 'notebook env',
      node: nodeOf(c),
      ageSeconds: Math.max(0, now - c.created),
      owner: c.owner,
      notebook: notebookOf(c.owner, sessions),
      label: c.label,
      exit: c.exit ? c.exit.description : null,
      failed: exitFailed(c.exit),
      stoppable: c.phase !== 'exited' && c.phase !== 'stopping',
      idleHolder: c.phase !== 'exited' && c.idle_holder ? c.idle_holder : null,
      busy: c.phase !== 'exited' && (c.gpus ?? []).length ? describeBusy(c.gpu_busy) : null,
      created: c.created
    }));
    rows.sort((a, b) => Number(b.stoppable) - Number(a.stoppable) || b.created - a.created);
    return rows.map(({ created: _created, ...row }) => row);
  }
}

/** "H100 ×2 (simulated)", "CPU only", or the request while it waits for one. */
export function describeGpus(c: Container): string {
  const gpus = c.gpus ?? [];
  if (!gpus.length) {
    return c.phase === 'queued' || c.phase === 'starting'
      ? c.gpu_request === 'none'
        ? 'CPU only'
        : c.gpu_request
      : 'CPU only';
  }
  const types = [...new Set(gpus.map(g => g.type))].sort();
  const count = gpus.length > 1 ? ` ×${gpus.length}` : '';
  return types.join(' + ') + count + (gpus[0].simulated ? ' (simulated)' : '');
}

/** Node IPs in numeric order ("10.0.0.2" before "10.0.0.10"). */
export function compareNodes(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** The node a container runs on: its own `node`, else its GPUs' (null on the local runtime). */
export function nodeOf(c: Container): string | null {
  return c.node || (c.gpus ?? []).find(g => g.node)?.node || null;
}

/** Who holds a GPU, in words: its notebook (when a session of this server has it) or its owner, then
 * what holds it; another Unix user's GPU by that user, since when and whether idle (usage.ts). */
export function holderText(
  gpu: Gpu,
  containers: Map<string, Container>,
  sessions: SessionInfo[] = [],
  now = Date.now() / 1000
): string {
  if (!gpu.holder) {
    return 'free';
  }
  if (isOtherUser(gpu.holder)) {
    return otherUserText(gpu.holder, now);
  }
  const { owner, container } = gpu.holder;
  const label = container ? containers.get(container)?.label : undefined;
  const who = notebookOf(owner, sessions) ?? (owner || 'someone');
  const what = `${label ? label + ' ' : ''}${container ? container.slice(0, 8) : ''}`.trim();
  return what ? `${who} · ${what}` : who;
}

/** The holder in full, for a tooltip ("free" when nobody holds it). */
export function holderTitle(
  gpu: Gpu,
  containers: Map<string, Container>,
  sessions: SessionInfo[] = [],
  now = Date.now() / 1000
): string {
  if (!gpu.holder) {
    return 'free';
  }
  if (isOtherUser(gpu.holder)) {
    return `held by another user: ${otherUserText(gpu.holder, now)}`;
  }
  const { owner, container } = gpu.holder;
  const notebook = notebookOf(owner, sessions);
  const label = container ? containers.get(container)?.label : undefined;
  return [
    `held by ${notebook ? `${notebook} (${owner})` : owner || 'someone'}`,
    label || null,
    container ? `container ${container}` : null
  ]
    .filter(Boolean)
    .join(' · ');
}

/** Whether an exit is a failure: out of memory, or an end of its own with a signal or a non-zero code.
 * A stop (on request, idle scaledown, its notebook gone) and a clean exit are normal ends. */
export function exitFailed(exit: Container['exit']): boolean {
  if (!exit) {
    return false;
  }
  if (exit.oom) {
    return true;
  }
  if (exit.stopped) {
    return false;
  }
  return (exit.code !== null && exit.code !== 0) || exit.signal !== null;
}

/** The notebook whose kernel owns a container (`owner` is "kernel <first 8 of its id>"). */
export function notebookOf(owner: string, sessions: SessionInfo[]): string | null {
  const m = /^kernel ([0-9a-f-]{4,})/i.exec(owner || '');
  if (!m) {
    return null;
  }
  const prefix = m[1].toLowerCase();
  const found = sessions.find(s => s.kernelId.toLowerCase().startsWith(prefix));
  return found ? found.path : null;
}
