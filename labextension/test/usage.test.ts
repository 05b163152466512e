import { describe, expect, it } from 'vitest';

import { DashboardState } from '../src/state';
import { Container, GpusView } from '../src/types';
import {
  budgetTight,
  describeBudget,
  describeBusy,
  describeHeld,
  describeIdleHolders,
  describePeriod,
  describePrices,
  formatClock,
  formatCost,
  formatGpuHours,
  isOtherUser,
  mergeIdleHolders,
  otherUserText,
  parseUsage,
  refreshDelay
} from '../src/usage';

/** Local time as epoch seconds (the panel words times in the browser's own zone). */
function local(year: number, month: number, day: number, hour = 0, minute = 0): number {
  return new Date(year, month - 1, day, hour, minute).getTime() / 1000;
}

const REASON = 'held H100 for 1.0 h at 2% busy (under 5%); stop it to let others have the GPU';

/** GET usage as the server answers it (server_ext/api/usage.py). */
const USAGE = {
  user: 'ann',
  host_wide: true,
  host_note: '',
  prices: { H100: 3.6 },
  today: {
    gpu_hours: 0.5,
    cost: 1.8,
    by_type: { H100: { gpu_hours: 0.5, cost: 1.8 } }
  },
  month: {
    gpu_hours: 12.25,
    cost: 36.9,
    by_type: { H100: { gpu_hours: 10.25, cost: 36.9 }, A10G: { gpu_hours: 2, cost: null } },
    budget_hours: 100,
    resets: local(2027, 1, 1)
  },
  max_gpus_per_user: 2,
  held_now: 1,
  leases: [{ lease: 'l1', user: 'ann', gpu: 'GPU-a', gpu_type: 'H100', owner: 'kernel 1a2b3c4d', label: '%%remote',
    start: 1000, end: null, busy: 0.02, recovered: false }],
  idle_holders: [{ id: 'c0ffee123456', label: '%%remote', phase: 'ready', idle_holder: REASON }]
};

function container(id: string, extra: Partial<Container> = {}): Container {
  return {
    id, owner: 'kernel 1a2b3c4d', label: '%%remote', phase: 'ready', gpu_request: 'H100',
    gpus: [{ index: 0, uuid: 'GPU-a', type: 'H100', simulated: true }],
    queue_position: null, queued_seconds: 0, phases: [], created: 1000, cpus: null, memory: null,
    sandboxed: true, exit: null, ...extra
  };
}

describe('usage figures', () => {
  it('reads GET usage, types by use', () => {
    const u = parseUsage(USAGE)!;
    expect(u.user).toBe('ann');
    expect(u.today).toEqual({ gpuHours: 0.5, cost: 1.8, byType: [{ type: 'H100', gpuHours: 0.5, cost: 1.8 }] });
    expect(u.month.byType.map(t => t.type)).toEqual(['H100', 'A10G']);
    expect(u.month.budgetHours).toBe(100);
    expect(u.maxGpus).toBe(2);
    expect(u.heldNow).toBe(1);
    expect(u.idleHolders).toEqual([{ id: 'c0ffee123456', label: '%%remote', reason: REASON }]);
    // no budget, no cap: null, also when the server says 0
    const none = parseUsage({ ...USAGE, max_gpus_per_user: 0, month: { ...USAGE.month, budget_hours: null } })!;
    expect(none.maxGpus).toBeNull();
    expect(none.month.budgetHours).toBeNull();
    expect(parseUsage({ error: 'nope' })).toBeNull();
    expect(parseUsage(null)).toBeNull();
  });

  it('words GPU-hours and costs', () => {
    expect(formatGpuHours(0)).toBe('0 GPU-h');
    expect(formatGpuHours(10 / 3600)).toBe('0.0028 GPU-h');
    expect(formatGpuHours(0.5)).toBe('0.5 GPU-h');
    expect(formatGpuHours(12.25)).toBe('12.3 GPU-h');
    expect(formatGpuHours(130.4)).toBe('130 GPU-h');
    expect(formatCost(36.9)).toBe('36.90');
    expect(formatCost(0.001)).toBe('<0.01');
    expect(formatCost(0)).toBe('0.00');
  });

  it('says each period with its cost, and the types used without a price', () => {
    const u = parseUsage(USAGE)!;
    expect(describePeriod('Today', u.today, u.prices)).toBe('Today: 0.5 GPU-h · cost 1.80');
    expect(describePeriod('This month', u.month, u.prices)).toBe(
      'This month: 12.3 GPU-h (H100 10.3 GPU-h, A10G 2 GPU-h) · cost 36.90 · no price set for A10G'
    );
    // no prices at all: no cost, said once
    const free = parseUsage({ ...USAGE, prices: {}, today: { gpu_hours: 0.5, cost: null, by_type: { H100: { gpu_hours: 0.5, cost: null } } } })!;
    expect(describePeriod('Today', free.today, free.prices)).toBe('Today: 0.5 GPU-h · no GPU prices set');
    // nothing used: nothing missing
    const idle = parseUsage({ ...USAGE, today: { gpu_hours: 0, cost: 0, by_type: {} } })!;
    expect(describePeriod('Today', idle.today, idle.prices)).toBe('Today: 0 GPU-h · cost 0.00');
    expect(describePrices(u.prices)).toBe('prices per GPU-hour: H100 3.6');
    expect(describePrices({})).toMatch(/c\.Cellhop\.gpu_prices/);
  });

  it('says the budget, its reset, and the cap', () => {
    const u = parseUsage(USAGE)!;
    expect(describeBudget(u.month)).toBe('budget 12.3 of 100 GPU-h used, 87.8 left, resets 1 Jan');
    expect(budgetTight(u.month)).toBe(false);
    const spent = { ...u.month, gpuHours: 101 };
    expect(describeBudget(spent)).toBe('budget 101 of 100 GPU-h used, used up: new GPU requests are refused, resets 1 Jan');
    expect(budgetTight(spent)).toBe(true);
    expect(describeBudget({ ...u.month, budgetHours: null })).toBeNull();
    expect(describeHeld(1, 2)).toBe('Holding 1 GPU now · cap 2 per user');
    expect(describeHeld(0, null)).toBe('Holding 0 GPUs now · no per-user cap');
  });

  it('reads again no sooner than the debounce, nor within the least gap of the last reading', () => {
    expect(refreshDelay(1000, 0, 2, 5)).toBe(2);
    expect(refreshDelay(1000, 999, 2, 5)).toBe(4);
    expect(refreshDelay(1000, 990, 2, 5)).toBe(2);
  });
});

describe('idle GPU holders', () => {
  it('lists the live flagged containers, then those GET usage named that the panel does not know', () => {
    const live = [
      container('aaaaaaaa1111', { idle_holder: REASON }),
      container('bbbbbbbb2222'),
      container('cccccccc3333', { idle_holder: REASON, phase: 'exited' })
    ];
    const listed = parseUsage({
      ...USAGE,
      idle_holders: [
        { id: 'cccccccc3333', label: '%%remote', phase: 'ready', idle_holder: REASON }, // the panel saw it exit
        { id: 'dddddddd4444', label: 'kernel x', phase: 'ready', idle_holder: REASON },
        { id: 'eeeeeeee5555', label: '', phase: 'ready', idle_holder: null }
      ]
    })!.idleHolders;
    const holders = mergeIdleHolders(live, listed);
    expect(holders.map(h => h.id)).toEqual(['aaaaaaaa1111', 'dddddddd4444']);
    expect(describeIdleHolders(holders)).toBe(`Idle GPU holders: aaaaaaaa %%remote (${REASON}); dddddddd kernel x (${REASON})`);
    expect(describeIdleHolders([])).toBeNull();
  });

  it('badges a flagged container row with its reason and its mean GPU use', () => {
    const state = new DashboardState();
    state.setContainers([
      container('aaaaaaaa1111', { idle_holder: REASON, gpu_busy: 0.021 }),
      container('bbbbbbbb2222', { gpu_busy: null, created: 900 }),
      container('cccccccc3333', { idle_holder: REASON, phase: 'exited', created: 800 })
    ]);
    const rows = state.containerRows(2000);
    expect(rows.map(r => [r.id, r.idleHolder, r.busy])).toEqual([
      ['aaaaaaaa1111', REASON, '2% busy'],
      ['bbbbbbbb2222', null, null],
      ['cccccccc3333', null, null] // ended: no longer holding anything
    ]);
    expect(describeBusy(undefined)).toBeNull();
  });
});

describe("another user's GPU", () => {
  const now = local(2026, 12, 5, 15, 0);

  function inventory(holder: GpusView['gpus'][0]['holder']): GpusView {
    return {
      gpus: [{ index: 0, uuid: 'GPU-a', type: 'H100', memory_total: 1, simulated: true, holder }],
      simulated: true, reason: null, driver_version: null, runtime: 'local (bubblewrap)'
    };
  }

  it('shows the user, since when and idle since, never a container', () => {
    const bob = { user: 'bob', since: local(2026, 12, 5, 14, 5), idle_since: now - 12 * 60, owner: 'user bob' };
    expect(isOtherUser(bob)).toBe(true);
    expect(formatClock(bob.since)).toBe('14:05');
    expect(otherUserText(bob, now)).toBe('user bob · since 14:05 · idle 12 min');
    expect(otherUserText({ ...bob, idle_since: null }, now)).toBe('user bob · since 14:05 · busy');
    expect(otherUserText({ ...bob, since: local(2026, 12, 3, 9, 30) }, now)).toBe('user bob · since 3 Dec 09:30 · idle 12 min');

    const state = new DashboardState();
    state.setInventory(inventory(bob));
    const [row] = state.gpuRows([], now);
    expect(row.holder).toBe('user bob · since 14:05 · idle 12 min');
    expect(row.holderTitle).toBe('held by another user: user bob · since 14:05 · idle 12 min');
    expect(row.held).toBe(true);
    expect(row.otherUser).toBe('bob');
    expect(row.holderContainer).toBeNull();
  });

  it("words this user's own lease as before (its container, not the user)", () => {
    const own = { owner: 'kernel 1a2b3c4d', container: 'c1', user: 'ann', since: now - 60, idle_since: null };
    expect(isOtherUser(own)).toBe(false);
    const state = new DashboardState();
    state.setInventory(inventory(own));
    state.setContainers([container('c1')]);
    const [row] = state.gpuRows([], now);
    expect(row.holder).toBe('kernel 1a2b3c4d · %%remote c1');
    expect(row.otherUser).toBeNull();
    expect(row.held).toBe(true);
  });
});
