import { describe, expect, it } from 'vitest';

import { describeRun, notebookRunRequest, parseRuns, parseSchedules, scheduleWhen } from '../src/runs';

describe('runs', () => {
  it('keeps the runs it can show and their fields', () => {
    const runs = parseRuns({
      runs: [
        { id: 'r1', status: 'succeeded', kind: 'notebook', name: 'train.ipynb', gpu: 'H100', gpus: ['H100'], duration: 75,
          attempts: [{ status: 'failed', error: 'x' }, { status: 'succeeded', error: null }], started: 1, error: null },
        { id: 'r2', status: 'queued', name: 'embed', gpu: 'none', attempts: [] },
        { status: 'running' },
        null
      ]
    });
    expect(runs.map(r => r.id)).toEqual(['r1', 'r2']);
    expect(describeRun(runs[0])).toBe('H100 · 1 min · 2 attempts');
    expect(describeRun(runs[1])).toBe('CPU');
    expect(runs[1].kind).toBe('function');
    expect(parseRuns({})).toEqual([]);
    expect(parseRuns(null)).toEqual([]);
  });

  it('says when a schedule fires', () => {
    const [cron, every] = parseSchedules({
      schedules: [
        { id: 's1', name: 'nightly', kind: 'notebook', cron: '0 3 * * *', every: null, paused: false, fired: 2, next: 10 },
        { id: 's2', name: 'tick', kind: 'function', cron: null, every: 900, paused: true, fired: 0, next: null },
        { name: 'no id' }
      ]
    });
    expect(scheduleWhen(cron)).toBe('cron 0 3 * * *');
    expect(scheduleWhen(every)).toBe('every 15 min');
    expect(parseSchedules({ schedules: 'nope' })).toEqual([]);
  });
});

describe('run on GPU', () => {
  it('sends the notebook without outputs, named by its file', () => {
    const model = {
      nbformat: 4,
      cells: [
        { cell_type: 'code', source: 'x = 1', outputs: [{ output_type: 'stream', text: 'old' }], execution_count: 3 },
        { cell_type: 'markdown', source: '# hi' }
      ]
    };
    const body = notebookRunRequest('work/train.ipynb', model, ' H100 ') as { notebook: typeof model; name: string; gpu: string };
    expect(body.name).toBe('train.ipynb');
    expect(body.gpu).toBe('H100');
    expect(body.notebook.cells[0]).toEqual({ cell_type: 'code', source: 'x = 1', outputs: [], execution_count: null });
    expect(model.cells[0].outputs.length).toBe(1); // the editor's model is left as it is
    expect(notebookRunRequest('a.ipynb', model, '').gpu).toBeNull();
  });
});
