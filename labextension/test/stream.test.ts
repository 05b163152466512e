import { describe, expect, it } from 'vitest';

import { EventStream, eventsUrl, SocketLike } from '../src/stream';
import { CellhopEvent } from '../src/types';

/** A socket the test opens, feeds and closes by hand, as a server would. */
class TestSocket implements SocketLike {
  constructor(readonly url: string) {}
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: unknown) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  readyState = 0;
  sent: any[] = [];
  closedByClient = false;
  send(data: string) { this.sent.push(JSON.parse(data)); }
  close() { this.closedByClient = true; this.readyState = 3; }
  open() { this.readyState = 1; this.onopen?.({}); }
  message(obj: unknown) { this.onmessage?.({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) }); }
  drop() { this.readyState = 3; this.onclose?.({}); }
}

function harness(options: { paused?: boolean } = {}) {
  const sockets: TestSocket[] = [];
  const timers: { fn: () => void; ms: number }[] = [];
  const events: CellhopEvent[] = [];
  const statuses: string[] = [];
  const stream = new EventStream({
    url: () => 'ws://h/base/cellhop/api/events',
    onEvent: e => events.push(e),
    onStatus: s => statuses.push(s),
    createSocket: url => { const s = new TestSocket(url); sockets.push(s); return s; },
    setTimer: (fn, ms) => { timers.push({ fn, ms }); return timers.length; },
    clearTimer: () => undefined,
    minDelay: 500,
    maxDelay: 4000,
    paused: options.paused
  });
  return { stream, sockets, timers, events, statuses };
}

describe('EventStream', () => {
  it('asks for its interval on connect and delivers parsed events', () => {
    const { stream, sockets, events, statuses } = harness();
    stream.connect();
    sockets[0].open();
    expect(sockets[0].sent).toEqual([{ type: 'configure', interval: 1 }]);
    sockets[0].message({ type: 'hello', gpus: { gpus: [] }, containers: [] });
    sockets[0].message('not json');
    expect(events.map(e => e.type)).toEqual(['hello']);
    expect(statuses).toEqual(['connecting', 'connected']);
  });

  it('reconnects after the server goes away, with growing delays, and restates its wishes', () => {
    const { stream, sockets, timers, statuses } = harness();
    stream.connect();
    sockets[0].open();
    stream.configure(0.5);
    stream.pause();
    expect(sockets[0].sent.slice(1)).toEqual([{ type: 'configure', interval: 0.5 }, { type: 'pause' }]);

    sockets[0].drop(); // server restart
    expect(statuses.at(-1)).toBe('reconnecting');
    expect(timers.map(t => t.ms)).toEqual([500]);
    timers[0].fn();
    sockets[1].drop(); // still down
    timers[1].fn();
    sockets[2].drop();
    timers[2].fn();
    sockets[3].drop();
    timers[3].fn();
    expect(timers.map(t => t.ms)).toEqual([500, 1000, 2000, 4000]);
    sockets[4].open(); // back
    expect(sockets[4].sent).toEqual([{ type: 'configure', interval: 0.5 }, { type: 'pause' }]);
    expect(statuses.at(-1)).toBe('connected');
    expect(stream.connections).toBe(2);
    // the delay starts small again after a good connection
    sockets[4].drop();
    expect(timers.at(-1)!.ms).toBe(500);
  });

  it('connects with its interval and pause state in the URL', () => {
    const { stream, sockets, timers } = harness({ paused: true });
    stream.connect();
    expect(sockets[0].url).toBe('ws://h/base/cellhop/api/events?interval=1&paused=1');
    sockets[0].open();
    stream.configure(0.5);
    stream.resume();
    sockets[0].drop();
    timers[0].fn();
    expect(sockets[1].url).toBe('ws://h/base/cellhop/api/events?interval=0.5&paused=0');
  });

  it('sends nothing while not open and stops for good when disposed', () => {
    const { stream, sockets, timers } = harness({ paused: true });
    stream.connect();
    stream.resume(); // not open yet: remembered, not sent
    expect(sockets[0].sent).toEqual([]);
    sockets[0].open();
    expect(sockets[0].sent).toEqual([{ type: 'configure', interval: 1 }]);
    stream.dispose();
    expect(sockets[0].closedByClient).toBe(true);
    sockets[0].drop();
    expect(timers).toEqual([]);
    stream.connect();
    expect(sockets).toHaveLength(1);
  });

  it('ignores a replaced socket', () => {
    const { stream, sockets, events } = harness();
    stream.connect();
    const old = sockets[0];
    old.drop();
    stream.connect();
    old.message({ type: 'hello' });
    expect(events).toEqual([]);
  });
});

describe('eventsUrl', () => {
  it('joins the base URL (JupyterHub prefix included) and adds the token', () => {
    expect(eventsUrl({ wsUrl: 'ws://h:8888/user/ann/', token: 'abc def' }))
      .toBe('ws://h:8888/user/ann/cellhop/api/events?token=abc%20def');
    expect(eventsUrl({ wsUrl: 'wss://h/base', token: '' })).toBe('wss://h/base/cellhop/api/events');
    expect(eventsUrl({ wsUrl: 'ws://h/', token: 't', appendToken: false })).toBe('ws://h/cellhop/api/events');
  });
});
