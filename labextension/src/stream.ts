/**
 * The control plane's event stream (`{base_url}cellhop/api/events`), kept open.
 *
 * After the socket closes (a server restart, a network blip) it connects again with
 * a growing delay, and on every connection asks again for the metrics interval and
 * pause state the panel wants; the server's `hello` then restates everything.
 */

import { CellhopEvent } from './types';

/** The part of the browser's WebSocket this uses (so tests can hand in their own). */
export interface SocketLike {
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  readyState: number;
  send(data: string): void;
  close(): void;
}

export type StreamStatus = 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface StreamOptions {
  /** The URL to connect to, asked anew at each attempt. */
  url: () => string;
  onEvent: (event: CellhopEvent) => void;
  onStatus?: (status: StreamStatus, detail?: string) => void;
  createSocket?: (url: string) => SocketLike;
  interval?: number;
  paused?: boolean;
  /** Reconnect delays in ms: the first, doubled each failure up to the last. */
  minDelay?: number;
  maxDelay?: number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

const OPEN = 1;

/** `wsUrl` + the events route, with the token where the server wants it in the URL. */
export function eventsUrl(settings: { wsUrl: string; token?: string; appendToken?: boolean }): string {
  const base = settings.wsUrl.endsWith('/') ? settings.wsUrl : settings.wsUrl + '/';
  let url = base + 'cellhop/api/events';
  if (settings.token && settings.appendToken !== false) {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  return url;
}

export class EventStream {
  constructor(options: StreamOptions) {
    this.options = options;
    this.interval = options.interval ?? 1;
    this.paused = options.paused ?? false;
    this.delay = options.minDelay ?? 500;
  }

  interval: number;
  paused: boolean;
  status: StreamStatus = 'closed';
  /** Connections made so far (1 after the first). */
  connections = 0;

  connect(): void {
    if (this.disposed) {
      return;
    }
    this.clearRetry();
    this.setStatus(this.connections ? 'reconnecting' : 'connecting');
    const create = this.options.createSocket ?? ((url: string) => new WebSocket(url) as unknown as SocketLike);
    let socket: SocketLike;
    try {
      socket = create(this.connectUrl());
    } catch (err) {
      this.scheduleRetry(String(err));
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (socket !== this.socket) {
        return;
      }
      this.connections++;
      this.delay = this.options.minDelay ?? 500;
      this.setStatus('connected');
      this.sendState();
    };
    socket.onmessage = ev => {
      if (socket !== this.socket) {
        return;
      }
      let event: CellhopEvent;
      try {
        event = JSON.parse(String(ev.data));
      } catch {
        return; // not ours to show
      }
      this.options.onEvent(event);
    };
    socket.onerror = () => {
      /* a close follows; it decides */
    };
    socket.onclose = () => {
      if (socket !== this.socket) {
        return;
      }
      this.socket = null;
      if (!this.disposed) {
        this.scheduleRetry('the event stream closed');
      }
    };
  }

  /** The URL with this stream's wishes, so the server starts as asked (no sample before a pause). */
  connectUrl(): string {
    const url = this.options.url();
    const query = `interval=${encodeURIComponent(String(this.interval))}&paused=${this.paused ? 1 : 0}`;
    return url + (url.includes('?') ? '&' : '?') + query;
  }

  /** Metrics every `seconds` (0.1 to 60), on this and every later connection. */
  configure(seconds: number): void {
    this.interval = seconds;
    this.send({ type: 'configure', interval: seconds });
  }

  pause(): void {
    this.paused = true;
    this.send({ type: 'pause' });
  }

  resume(): void {
    this.paused = false;
    this.send({ type: 'resume' });
  }

  dispose(): void {
    this.disposed = true;
    this.clearRetry();
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.close();
    }
    this.setStatus('closed');
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  private sendState(): void {
    this.send({ type: 'configure', interval: this.interval });
    if (this.paused) {
      this.send({ type: 'pause' });
    }
  }

  private send(message: object): void {
    if (this.socket && this.socket.readyState === OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  private scheduleRetry(detail: string): void {
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, this.options.maxDelay ?? 10000);
    this.setStatus('reconnecting', `${detail}; trying again in ${Math.round(delay / 100) / 10} s`);
    const setTimer = this.options.setTimer ?? ((fn: () => void, ms: number) => setTimeout(fn, ms));
    this.retry = setTimer(() => {
      this.retry = null;
      this.connect();
    }, delay);
  }

  private clearRetry(): void {
    if (this.retry !== null) {
      (this.options.clearTimer ?? ((h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>)))(this.retry);
      this.retry = null;
    }
  }

  private setStatus(status: StreamStatus, detail?: string): void {
    this.status = status;
    this.options.onStatus?.(status, detail);
  }

  private readonly options: StreamOptions;
  private socket: SocketLike | null = null;
  private retry: unknown = null;
  private delay: number;
  private disposed = false;
}
