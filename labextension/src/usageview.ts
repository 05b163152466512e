/**
 * The Usage section: this user's GPU-hours today and this month (GET usage), their cost at the set prices,
 * the monthly budget, the per-user cap and GPUs held now, and the containers flagged as idle GPU holders.
 *
 * GET usage is read when the panel shows, a little after containers change (debounced, never more than once
 * every few seconds) and once a minute while the panel shows; never while it is hidden. The wording is
 * usage.ts's.
 */

import { CellhopApi, CellhopApiError } from './api';
import { h, message } from './dom';
import { Container } from './types';
import {
  budgetTight,
  describeBudget,
  describeHeld,
  describeIdleHolders,
  describePeriod,
  describePrices,
  mergeIdleHolders,
  parseUsage,
  refreshDelay,
  UsageInfo
} from './usage';

/** Seconds between readings while the panel shows. */
const PERIOD_S = 60;
/** Seconds a burst of container changes settles before a reading. */
const DEBOUNCE_S = 2;
/** Seconds at least between two readings a change asked for. */
const MIN_GAP_S = 5;

export interface UsageViewOptions {
  api: CellhopApi;
  /** The panel's containers, as the event stream keeps them. */
  containers: () => Iterable<Container>;
  /** Whether the panel shows (nothing is read while it is hidden). */
  visible: () => boolean;
  /** Tell the user, once per container, that one of theirs is flagged as an idle GPU holder. */
  warn?: (message: string) => void;
  /** Also run on each periodic reading (the panel re-reads GET gpus: other users' leases send no event). */
  onTick?: () => void;
}

export class UsageView {
  constructor(private readonly options: UsageViewOptions) {
    this.node = h('div', { className: 'jp-CellhopUsage' }, h('div', { className: 'jp-CellhopPanel-empty' }, 'Loading…'));
    this.ticker = window.setInterval(() => this.tick(), PERIOD_S * 1000);
  }

  readonly node: HTMLElement;
  info: UsageInfo | null = null;

  dispose(): void {
    window.clearInterval(this.ticker);
    window.clearTimeout(this.timer);
  }

  /** Containers changed (an event): redraw the idle holders now, read GET usage a little later. */
  containersChanged(): void {
    this.warnNewHolders();
    this.render();
    if (!this.unsupported) {
      this.refreshSoon();
    }
  }

  /** Read GET usage after the debounce (and the least gap since the last reading). */
  refreshSoon(): void {
    window.clearTimeout(this.timer);
    const delay = refreshDelay(Date.now() / 1000, this.lastRead, DEBOUNCE_S, MIN_GAP_S);
    this.timer = window.setTimeout(() => void this.refresh(), delay * 1000);
  }

  async refresh(): Promise<void> {
    window.clearTimeout(this.timer);
    if (this.reading) {
      this.again = true; // one more reading after this one, not one per call
      return;
    }
    this.reading = true;
    this.lastRead = Date.now() / 1000;
    try {
      const info = parseUsage(await this.options.api.request(['usage']));
      this.info = info;
      this.unsupported = false;
      this.error = info ? null : 'GET usage answered something else than GPU usage.';
    } catch (err) {
      this.unsupported = err instanceof CellhopApiError && err.status === 404;
      this.error = this.unsupported
        ? 'This server does not report GPU usage (GET usage is not served).'
        : `Could not read GPU usage: ${message(err)}`;
    } finally {
      this.reading = false;
    }
    this.warnNewHolders();
    this.render();
    if (this.again) {
      this.again = false;
      this.refreshSoon();
    }
  }

  private tick(): void {
    if (!this.options.visible()) {
      return;
    }
    this.options.onTick?.();
    if (!this.unsupported) {
      void this.refresh();
    }
  }

  private holders() {
    return mergeIdleHolders(this.options.containers(), this.info?.idleHolders ?? []);
  }

  private warnNewHolders(): void {
    for (const holder of this.holders()) {
      if (!this.warned.has(holder.id)) {
        this.warned.add(holder.id);
        this.options.warn?.(`Container ${holder.id.slice(0, 8)}${holder.label ? ' (' + holder.label + ')' : ''} is an idle GPU holder: ${holder.reason}.`);
      }
    }
  }

  private render(): void {
    const children: HTMLElement[] = [];
    const info = this.info;
    if (this.error) {
      children.push(h('div', { className: 'jp-CellhopPanel-empty', 'data-value': 'usage-error' }, this.error));
    }
    if (info) {
      const prices = describePrices(info.prices);
      children.push(
        h('div', { className: 'jp-CellhopUsage-line', 'data-value': 'today', title: prices }, describePeriod('Today', info.today, info.prices)),
        h('div', { className: 'jp-CellhopUsage-line', 'data-value': 'month', title: prices }, describePeriod('This month', info.month, info.prices))
      );
      const budget = describeBudget(info.month);
      if (budget) {
        const tight = budgetTight(info.month);
        children.push(
          h('div', { className: 'jp-CellhopUsage-line' + (tight ? ' jp-mod-warn' : ''), 'data-value': 'budget', 'data-tight': String(tight) }, budget)
        );
      }
      children.push(h('div', { className: 'jp-CellhopUsage-line', 'data-value': 'held' }, describeHeld(info.heldNow, info.maxGpus)));
      if (info.hostNote) {
        children.push(h('div', { className: 'jp-CellhopUsage-note', 'data-value': 'host-note' }, info.hostNote));
      }
    } else if (!this.error) {
      children.push(h('div', { className: 'jp-CellhopPanel-empty' }, 'Loading…'));
    }
    const idle = describeIdleHolders(this.holders());
    if (idle) {
      children.push(h('div', { className: 'jp-CellhopUsage-line jp-mod-warn', 'data-value': 'idle-holders' }, idle));
    }
    this.node.replaceChildren(...children);
  }

  private readonly ticker: number;
  private timer = 0;
  private reading = false;
  private again = false;
  private lastRead = 0;
  /** GET usage answered 404: no reading until the user or a reconnect asks again. */
  private unsupported = false;
  private error: string | null = null;
  private readonly warned = new Set<string>();
}
