import { describe, expect, it } from 'vitest';

import { DashboardState, compareNodes, describeGpus, exitFailed, nodeOf, notebookOf } from '../src/state';
import { Container, GpusView, HelloEvent } from '../src/types';

const GiB = 2 ** 30;

function inventory(): GpusView {
  return {
    gpus: [
      { index: 1, uuid: 'GPU-b', type: 'H100', memory_total: 80 * GiB, simulated: true, holder: null },
      { index: 0, uuid: 'GPU-a', type: 'H100', memory_total: 80 * GiB, simulated: true, holder: null },
      { index: 2, uuid: 'GPU-c', type: 'A10G', memory_total: 24 * GiB, simulated: true,
        holder: { owner: 'kernel 99999999', container: 'elsewhere1' } }
    ],
    simulated: true,
    reason: null,
    driver_version: null,
    runtime: 'local (bubblewrap)'
  };
}

function container(id: string, phase: Container['phase'], extra: Partial<Container> = {}): Container {
  return {
    id, owner: 'kernel 1a2b3c4d', label: '%%remote', phase, gpu_request: 'H100',
    gpus: [{ index: 0, uuid: 'GPU-a', type: 'H100', simulated: true }],
    queue_position: null, queued_seconds: 0, phases: [], created: 1000, cpus: null, memory: null,
    sandboxed: true, exit: null, ...extra
  };
}

function hello(containers: Container[] = []): HelloEvent {
  return { type: 'hello', gpus: inventory(), containers, interval: 1, paused: false };
}

describe('DashboardState', () => {
  it('shows a standby as such and drops it when a request claims it', () => {
    const state = new DashboardState();
    const standby = container('standby01', 'ready', { standby: true, gpus: [], gpu_request: 'none' });
    state.apply(hello([standby]));
    expect(state.containerRows(1010).map(r => r.phase)).toEqual(['standby']);
    const claimed = container('claimed01', 'ready', { claimed_from: 'standby01' });
    state.apply({ type: 'container', id: 'standby01', phase: 'ready', time: 1011, container: standby, removed: true });
    state.apply({ type: 'container', id: 'claimed01', phase: 'ready', time: 1011, container: claimed });
    expect(state.containerRows(1012).map(r => [r.id, r.phase])).toEqual([['claimed01', 'ready']]);
  });

  it('lists GPUs in index order with their holders after hello', () => {
    const state = new DashboardState();
    expect(state.apply(hello())).toBe(true);
    const rows = state.gpuRows();
    expect(rows.map(r => r.uuid)).toEqual(['GPU-a', 'GPU-b', 'GPU-c']);
    expect(rows[0].holder).toBe('free');
    expect(rows[0].simulated).toBe(true);
    expect(rows[2].holder).toBe('kernel 99999999 · elsewher');
    expect(rows[2].holderContainer).toBe('elsewhere1');
    expect(rows[0].utilization).toBeNull();
    expect(rows[0].memoryTotal).toBe(80 * GiB);
  });

  it('takes the latest sample and keeps a history within the window', () => {
    const state = new DashboardState({ historySeconds: 10 });
    state.apply(hello());
    for (let t = 100; t <= 120; t++) {
      state.apply({ type: 'metrics', time: t, gpus: [
        { uuid: 'GPU-a', utilization: t - 100, memory_used: 8 * GiB, memory_total: 80 * GiB, power_w: 300, temperature_c: 61 },
        { uuid: 'GPU-b', simulated: true, memory_total: 80 * GiB } // readings left out
      ] });
    }
    const [a, b] = state.gpuRows();
    expect(a.utilization).toBe(20);
    expect(a.memoryUsed).toBe(8 * GiB);
    expect(a.powerW).toBe(300);
    expect(a.temperatureC).toBe(61);
    expect(a.history.time[0]).toBe(110);
    expect(a.history.time).toHaveLength(11);
    expect(a.history.utilization.at(-1)).toBe(20);
    expect(a.history.memory.at(-1)).toBeCloseTo(0.1);
    expect(b.utilization).toBeNull();
    expect(b.powerW).toBeNull();
    expect(b.history.utilization.every(v => v === null)).toBe(true);
  });

  it('marks a GPU held while its container runs and free once it exits', () => {
    const state = new DashboardState();
    state.apply(hello());
    state.apply({ type: 'container', id: 'c1', phase: 'ready', time: 1, container: container('c1', 'ready') });
    expect(state.gpuRows()[0].holder).toBe('kernel 1a2b3c4d · %%remote c1');
    expect(state.gpuRows()[0].holderContainer).toBe('c1');
    const exited = container('c1', 'exited', { exit: { code: null, signal: 15, oom: false, stopped: true, description: 'stopped on request' } });
    state.apply({ type: 'container', id: 'c1', phase: 'exited', time: 2, container: exited });
    expect(state.gpuRows()[0].holder).toBe('free');
    // another control plane's holder is left alone
    expect(state.gpuRows()[2].holderContainer).toBe('elsewhere1');
    const [row] = state.containerRows(1060);
    expect(row.exit).toBe('stopped on request');
    expect(row.stoppable).toBe(false);
  });

  it('says why there are no GPUs, and says nothing before it knows', () => {
    const state = new DashboardState();
    expect(state.emptyGpuMessage()).toBeNull();
    state.apply({ type: 'hello', containers: [], interval: 1, paused: false,
      gpus: { gpus: [], simulated: false, reason: 'NVML is not available (no NVIDIA driver)', driver_version: null, runtime: 'local' } });
    expect(state.emptyGpuMessage()).toContain('NVML is not available');
    expect(state.emptyGpuMessage()).toContain('CPU-only');
    expect(state.gpuRows()).toEqual([]);
  });

  it('orders containers live first, newest first, with age, phase and notebook', () => {
    const state = new DashboardState();
    state.apply(hello([
      container('old', 'ready', { created: 100 }),
      container('new', 'ready', { created: 200, owner: 'kernel ffff0000' }),
      container('gone', 'exited', { created: 300 }),
      container('wait', 'queued', { created: 150, gpus: [], queue_position: 2 })
    ]));
    const rows = state.containerRows(260, [{ kernelId: '1a2b3c4d-0000-4000-8000-000000000000', path: 'work/train.ipynb' }]);
    expect(rows.map(r => r.id)).toEqual(['new', 'wait', 'old', 'gone']);
    expect(rows[0].ageSeconds).toBe(60);
    expect(rows[0].notebook).toBeNull();
    expect(rows[2].notebook).toBe('work/train.ipynb');
    expect(rows[1].phase).toBe('queued (2 ahead)');
    expect(rows[1].gpus).toBe('H100');
    expect(rows[2].gpus).toBe('H100 (simulated)');
    expect(rows[2].image).toBe('notebook env');
    expect(rows.map(r => r.stoppable)).toEqual([true, true, true, false]);
  });

  it('a new hello replaces what an earlier connection said', () => {
    const state = new DashboardState();
    state.apply(hello([container('c1', 'ready')]));
    state.apply({ type: 'metrics', time: 5, gpus: [{ uuid: 'GPU-a', utilization: 50 }] });
    const view = inventory();
    view.gpus = view.gpus.filter(g => g.uuid !== 'GPU-a');
    state.apply({ type: 'hello', gpus: view, containers: [], interval: 1, paused: false });
    expect(state.containerRows(10)).toEqual([]);
    expect(state.latest.has('GPU-a')).toBe(false);
    expect(state.gpuRows().map(r => r.uuid)).toEqual(['GPU-b', 'GPU-c']);
  });

  it('keeps a metrics error until a good sample comes, and ignores unknown events', () => {
    const state = new DashboardState();
    state.apply(hello());
    state.apply({ type: 'metrics', time: 1, gpus: [], error: 'GPU metrics could not be read; see the server log' });
    expect(state.metricsError).toMatch(/could not be read/);
    state.apply({ type: 'metrics', time: 2, gpus: [{ uuid: 'GPU-a', utilization: 1 }] });
    expect(state.metricsError).toBeNull();
    expect(state.apply({ type: 'image', name: 'x' })).toBe(false);
  });
});

describe('nodes (the Ray runtime)', () => {
  function rayInventory(): GpusView {
    const gpu = (index: number, node: string, type = 'H100') => ({
      index, uuid: `GPU-${node}-${index}`, type, memory_total: 80 * GiB, simulated: true, node, holder: null
    });
    // indices count per node; the list comes in no particular order
    return { ...inventory(), gpus: [gpu(1, '127.0.0.10'), gpu(0, '127.0.0.2', 'A10G'), gpu(0, '127.0.0.10'), gpu(1, '127.0.0.2', 'A10G')],
      runtime: 'ray' };
  }

  it('shows no node on the local runtime, whether node is null or absent', () => {
    const state = new DashboardState();
    const view = inventory();
    view.gpus[0].node = null; // the others have no node key at all
    state.apply({ ...hello([container('c1', 'ready', { node: null })]), gpus: view });
    expect(state.nodes()).toEqual([]);
    expect(state.gpuRows().map(r => r.node)).toEqual([null, null, null]);
    const groups = state.gpuGroups();
    expect(groups).toHaveLength(1);
    expect(groups[0].node).toBeNull();
    expect(groups[0].rows.map(r => r.uuid)).toEqual(['GPU-a', 'GPU-b', 'GPU-c']);
    expect(state.containerRows(1060)[0].node).toBeNull();
  });

  it('groups GPU rows by node in numeric order, each node\'s GPUs by index', () => {
    const state = new DashboardState();
    state.apply({ ...hello(), gpus: rayInventory() });
    expect(state.nodes()).toEqual(['127.0.0.2', '127.0.0.10']);
    expect(state.gpuRows().map(r => `${r.node}/${r.index}`)).toEqual(
      ['127.0.0.2/0', '127.0.0.2/1', '127.0.0.10/0', '127.0.0.10/1']);
    const groups = state.gpuGroups();
    expect(groups.map(g => g.node)).toEqual(['127.0.0.2', '127.0.0.10']);
    expect(groups[0].rows.map(r => r.type)).toEqual(['A10G', 'A10G']);
    expect(groups[1].rows.map(r => r.uuid)).toEqual(['GPU-127.0.0.10-0', 'GPU-127.0.0.10-1']);
  });

  it('keeps the node through holder changes and a new hello without nodes', () => {
    const state = new DashboardState();
    state.apply({ ...hello(), gpus: rayInventory() });
    const c = container('c1', 'ready', { node: '127.0.0.10',
      gpus: [{ index: 1, uuid: 'GPU-127.0.0.10-1', type: 'H100', simulated: true, node: '127.0.0.10' }] });
    state.apply({ type: 'container', id: 'c1', phase: 'ready', time: 1, container: c });
    const held = state.gpuRows().find(r => r.holderContainer === 'c1');
    expect(held?.node).toBe('127.0.0.10');
    expect(held?.index).toBe(1);
    expect(state.containerRows(1060)[0].node).toBe('127.0.0.10');
    state.apply(hello());
    expect(state.gpuGroups().map(g => g.node)).toEqual([null]);
  });

  it('gives no groups while there are no GPUs', () => {
    const state = new DashboardState();
    expect(state.gpuGroups()).toEqual([]);
  });

  it('finds a container\'s node from itself or its GPUs', () => {
    expect(nodeOf(container('x', 'ready'))).toBeNull();
    expect(nodeOf(container('x', 'queued', { gpus: [], node: null }))).toBeNull();
    expect(nodeOf(container('x', 'ready', { node: '10.0.0.3' }))).toBe('10.0.0.3');
    expect(nodeOf(container('x', 'ready', {
      gpus: [{ index: 0, uuid: 'u', type: 'H100', simulated: false, node: '10.0.0.4' }] }))).toBe('10.0.0.4');
    expect(compareNodes('10.0.0.9', '10.0.0.10')).toBeLessThan(0);
  });
});

describe('helpers', () => {
  it('describes a container\'s GPUs', () => {
    expect(describeGpus(container('x', 'ready', { gpus: [] }))).toBe('CPU only');
    expect(describeGpus(container('x', 'ready', { gpus: [
      { index: 0, uuid: 'a', type: 'H100', simulated: false },
      { index: 1, uuid: 'b', type: 'H100', simulated: false }
    ] }))).toBe('H100 ×2');
  });

  it('finds the notebook of a kernel owner', () => {
    const sessions = [{ kernelId: 'ABCDEF12-3456', path: 'a.ipynb' }];
    expect(notebookOf('kernel abcdef12', sessions)).toBe('a.ipynb');
    expect(notebookOf('kernel 00000000', sessions)).toBeNull();
    expect(notebookOf('ipython', sessions)).toBeNull();
  });

  it('tells a failure from a normal end', () => {
    const exit = { code: null, signal: null, oom: false, stopped: false, description: '' };
    expect(exitFailed(null)).toBe(false);
    expect(exitFailed({ ...exit, stopped: true, signal: 15 })).toBe(false); // a stop, an idle scaledown
    expect(exitFailed({ ...exit, code: 0 })).toBe(false);
    expect(exitFailed({ ...exit, code: 3 })).toBe(true);
    expect(exitFailed({ ...exit, signal: 9 })).toBe(true);
    expect(exitFailed({ ...exit, oom: true, stopped: true })).toBe(true);
  });

  it('names a holder by its notebook, with the whole story in its title', () => {
    const state = new DashboardState();
    state.apply({ type: 'hello', gpus: inventory(), containers: [], interval: 1, paused: false } as HelloEvent);
    state.apply({ type: 'container', id: 'c1', phase: 'ready', time: 1, container: container('c1', 'ready') });
    const sessions = [{ kernelId: '1a2b3c4d-0000', path: 'work/train.ipynb' }];
    const row = state.gpuRows(sessions).find(r => r.uuid === 'GPU-a')!;
    expect(row.holder).toBe('work/train.ipynb · %%remote c1');
    expect(row.holderTitle).toBe('held by work/train.ipynb (kernel 1a2b3c4d) · %%remote · container c1');
    expect(state.gpuRows().find(r => r.uuid === 'GPU-a')!.holder).toBe('kernel 1a2b3c4d · %%remote c1');
  });

  it('shows a container\'s image by its name and marks failed exits', () => {
    const state = new DashboardState();
    const exit = { code: 1, signal: null, oom: false, stopped: false, description: 'exit code 1' };
    state.apply({ type: 'hello', gpus: inventory(), interval: 1, paused: false, containers: [
      container('c1', 'ready', { image: 'a3f9c1d2e4b5' }),
      container('c2', 'exited', { created: 900, exit })
    ] } as HelloEvent);
    const rows = state.containerRows(2000, [], new Map([['a3f9c1d2e4b5', 'torch-env']]));
    expect(rows.map(r => [r.id, r.image, r.failed])).toEqual([['c1', 'torch-env', false], ['c2', 'notebook env', true]]);
  });
});
