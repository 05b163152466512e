/**
 * GPU usage as the panel says it (issue 20, one GPU box for many users): this user's GPU-hours today and
 * this month from GET usage, what they cost at c.Cellhop.gpu_prices, the monthly budget, the per-user cap,
 * containers flagged as idle GPU holders, and GPUs another Unix user holds.
 *
 * Pure (no DOM, no network): usageview.ts draws these lines; state.ts words other users' GPUs with them.
 */

import { formatAge } from './format';
import { Container, Holder } from './types';

export interface TypeUse {
  type: string;
  gpuHours: number;
  /** null: no price is set for this type. */
  cost: number | null;
}

export interface PeriodUse {
  gpuHours: number;
  cost: number | null;
  byType: TypeUse[];
}

export interface MonthUse extends PeriodUse {
  /** GPU-hours this user may use this month; null: no budget. */
  budgetHours: number | null;
  /** When the month's count starts again (epoch seconds); null when the server did not say. */
  resets: number | null;
}

/** A container flagged as holding GPUs it hardly uses. */
export interface IdleHolder {
  id: string;
  label: string;
  reason: string;
}

export interface UsageInfo {
  user: string;
  hostWide: boolean;
  hostNote: string;
  prices: Record<string, number>;
  today: PeriodUse;
  month: MonthUse;
  /** GPUs one user may hold at once; null: no cap. */
  maxGpus: number | null;
  heldNow: number;
  idleHolders: IdleHolder[];
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

function numOrNull(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function record(value: unknown): Record<string, unknown> {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function parsePeriod(raw: unknown): PeriodUse {
  const p = record(raw);
  const byType = Object.entries(record(p.by_type))
    .map(([type, use]) => ({ type, gpuHours: num(record(use).gpu_hours), cost: numOrNull(record(use).cost) }))
    .sort((a, b) => b.gpuHours - a.gpuHours || a.type.localeCompare(b.type));
  return { gpuHours: num(p.gpu_hours), cost: numOrNull(p.cost), byType };
}

/** The containers GET usage lists as idle holders (container views), as IdleHolder. */
export function idleHoldersOf(containers: unknown): IdleHolder[] {
  if (!Array.isArray(containers)) {
    return [];
  }
  return containers
    .map(record)
    .filter(c => typeof c.id === 'string' && typeof c.idle_holder === 'string' && c.idle_holder && c.phase !== 'exited')
    .map(c => ({ id: c.id as string, label: typeof c.label === 'string' ? c.label : '', reason: c.idle_holder as string }));
}

/** GET usage's answer; null when it is not one. */
export function parseUsage(raw: unknown): UsageInfo | null {
  const u = record(raw);
  if (!('today' in u) || !('month' in u)) {
    return null;
  }
  const month = record(u.month);
  const budget = numOrNull(month.budget_hours);
  const cap = numOrNull(u.max_gpus_per_user);
  const prices: Record<string, number> = {};
  for (const [type, price] of Object.entries(record(u.prices))) {
    if (typeof price === 'number' && Number.isFinite(price)) {
      prices[type] = price;
    }
  }
  return {
    user: typeof u.user === 'string' ? u.user : '',
    hostWide: Boolean(u.host_wide),
    hostNote: typeof u.host_note === 'string' ? u.host_note : '',
    prices,
    today: parsePeriod(u.today),
    month: { ...parsePeriod(month), budgetHours: budget && budget > 0 ? budget : null, resets: numOrNull(month.resets) },
    maxGpus: cap && cap > 0 ? cap : null,
    heldNow: num(u.held_now),
    idleHolders: idleHoldersOf(u.idle_holders)
  };
}

/** GPU-hours, short: "0 GPU-h", "0.0042 GPU-h", "0.35 GPU-h", "12.5 GPU-h", "130 GPU-h". */
export function formatGpuHours(hours: number): string {
  const h = Math.max(0, hours);
  let text: string;
  if (h === 0) {
    text = '0';
  } else if (h < 1) {
    text = String(Number(h.toPrecision(2)));
  } else if (h < 100) {
    text = String(Number(h.toFixed(1)));
  } else {
    text = String(Math.round(h));
  }
  return `${text} GPU-h`;
}

/** A cost at the set prices (a price is per GPU-hour, in whatever currency the admin meant): "7.20", "<0.01". */
export function formatCost(cost: number): string {
  return cost > 0 && cost < 0.005 ? '<0.01' : cost.toFixed(2);
}

/** The types used in a period that have no price, where any use has a cost to show. */
export function unpriced(period: PeriodUse): string[] {
  return period.byType.filter(t => t.gpuHours > 0 && t.cost === null).map(t => t.type);
}

/**
 * One period in words: "Today: 0.35 GPU-h · cost 1.26", with each type when more than one was used
 * ("(H100 0.3 GPU-h, A10G 0.05 GPU-h)") and "no price set for A10G" for a type used without a price
 * ("no GPU prices set" when none is).
 */
export function describePeriod(label: string, period: PeriodUse, prices: Record<string, number>): string {
  const parts = [formatGpuHours(period.gpuHours)];
  if (period.byType.length > 1) {
    parts[0] += ` (${period.byType.map(t => `${t.type} ${formatGpuHours(t.gpuHours)}`).join(', ')})`;
  }
  if (period.cost !== null) {
    parts.push(`cost ${formatCost(period.cost)}`);
  }
  const missing = unpriced(period);
  if (missing.length) {
    parts.push(Object.keys(prices).length ? `no price set for ${missing.join(', ')}` : 'no GPU prices set');
  }
  return `${label}: ${parts.join(' · ')}`;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

/** Epoch seconds as this browser's local "HH:MM". */
export function formatClock(epoch: number): string {
  const d = new Date(epoch * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** Epoch seconds as a local date, "1 Jan". */
export function formatDay(epoch: number): string {
  const d = new Date(epoch * 1000);
  return `${d.getDate()} ${MONTHS[d.getMonth()]}`;
}

/** "since 14:05" today, "since 3 Dec 14:05" before today (local time). */
export function formatSince(since: number, now: number): string {
  const sameDay = new Date(since * 1000).toDateString() === new Date(now * 1000).toDateString();
  return `since ${sameDay ? '' : formatDay(since) + ' '}${formatClock(since)}`;
}

/** The month's budget: "budget 12.5 of 100 GPU-h used, 87.5 left, resets 1 Jan"; null without a budget. */
export function describeBudget(month: MonthUse): string | null {
  if (month.budgetHours === null) {
    return null;
  }
  const left = month.budgetHours - month.gpuHours;
  const used = `budget ${formatGpuHours(month.gpuHours).replace(' GPU-h', '')} of ${formatGpuHours(month.budgetHours)} used`;
  const rest = left > 0 ? `${formatGpuHours(left).replace(' GPU-h', '')} left` : 'used up: new GPU requests are refused';
  return `${used}, ${rest}` + (month.resets !== null ? `, resets ${formatDay(month.resets)}` : '');
}

/** Whether the budget is used up or nearly (90%): the panel shows it as a warning. */
export function budgetTight(month: MonthUse): boolean {
  return month.budgetHours !== null && month.gpuHours >= 0.9 * month.budgetHours;
}

/** "Holding 1 GPU now · cap 2 per user" (or "no per-user cap"). */
export function describeHeld(heldNow: number, maxGpus: number | null): string {
  const held = `Holding ${heldNow} GPU${heldNow === 1 ? '' : 's'} now`;
  return `${held} · ${maxGpus === null ? 'no per-user cap' : `cap ${maxGpus} per user`}`;
}

/** The price list, for a tooltip: "prices per GPU-hour: A10G 0.8, H100 3.6". */
export function describePrices(prices: Record<string, number>): string {
  const entries = Object.entries(prices).sort(([a], [b]) => a.localeCompare(b));
  return entries.length
    ? `prices per GPU-hour: ${entries.map(([t, p]) => `${t} ${p}`).join(', ')}`
    : 'no GPU prices set (c.Cellhop.gpu_prices)';
}

/**
 * This user's idle GPU holders: the panel's own containers (live, from the event stream) first, then those
 * GET usage listed that the panel does not know of (an exited container is no longer one).
 */
export function mergeIdleHolders(live: Iterable<Container>, listed: IdleHolder[]): IdleHolder[] {
  const holders = new Map<string, IdleHolder>();
  const known = new Set<string>();
  for (const c of live) {
    known.add(c.id);
    if (c.idle_holder && c.phase !== 'exited') {
      holders.set(c.id, { id: c.id, label: c.label, reason: c.idle_holder });
    }
  }
  for (const h of listed) {
    if (!known.has(h.id)) {
      holders.set(h.id, h);
    }
  }
  return [...holders.values()];
}

/** "Idle GPU holders: 3a4b5c6d %%remote (held H100 for 1.0 h at 2% busy ...)"; null when there is none. */
export function describeIdleHolders(holders: IdleHolder[]): string | null {
  if (!holders.length) {
    return null;
  }
  const items = holders.map(h => `${h.id.slice(0, 8)}${h.label ? ' ' + h.label : ''} (${h.reason})`);
  return `Idle GPU holder${holders.length > 1 ? 's' : ''}: ${items.join('; ')}`;
}

/** Whether a GPU's holder is another Unix user's lease (it carries a user and no container). */
export function isOtherUser(holder: Holder | null | undefined): holder is Holder & { user: string } {
  return Boolean(holder && !holder.container && typeof holder.user === 'string' && holder.user);
}

/** Another user's GPU: "user bob · since 14:05 · idle 12 min" (or "· busy"); never a container. */
export function otherUserText(holder: Holder & { user: string }, now: number): string {
  const parts = [`user ${holder.user}`];
  if (typeof holder.since === 'number') {
    parts.push(formatSince(holder.since, now));
  }
  parts.push(typeof holder.idle_since === 'number' ? `idle ${formatAge(now - holder.idle_since)}` : 'busy');
  return parts.join(' · ');
}

/** A container's mean GPU use so far: "2% busy"; null where none was measured. */
export function describeBusy(busy: number | null | undefined): string | null {
  return typeof busy === 'number' && Number.isFinite(busy) ? `${Math.round(busy * 100)}% busy` : null;
}

/**
 * Seconds to wait before the next GET usage a change asked for: the debounce, or longer while the last
 * reading (at `lastRead`, epoch seconds; 0: none yet) is less than `minGap` seconds old.
 */
export function refreshDelay(now: number, lastRead: number, debounce: number, minGap: number): number {
  return Math.max(debounce, lastRead + minGap - now);
}
