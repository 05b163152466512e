import { describe, expect, it } from 'vitest';

import {
  describeContainers,
  describeTraffic,
  endpointUrl,
  EndpointsState,
  formatLatency,
  logsText,
  parseEndpoints
} from '../src/endpoints';

/** An endpoint as GET endpoints lists it (server_ext/endpoints.py, Endpoints.view). */
const LISTED = {
  name: 'predict',
  version: 1,
  path: 'cellhop/endpoints/predict/',
  spec: { gpu: 'H100', concurrency: 8 },
  owner: 'user',
  keys: 0,
  containers: [{ id: 'c1', in_flight: 1, served: 4 }],
  starting: 0,
  queued: 0,
  in_flight: 1,
  requests: 5,
  errors: 0,
  retries: 0,
  requests_per_second: 0.5,
  p50_ms: 1.46,
  p95_ms: 12.3,
  last_error: null
};

describe('endpoints state', () => {
  it('reads GET endpoints, containers as a list', () => {
    const [e, ...rest] = parseEndpoints({ endpoints: [LISTED, { version: 2 }, null] });
    expect(rest).toEqual([]);
    expect(e).toMatchObject({ name: 'predict', running: 1, inFlight: 1, requests: 5, p50: 1.46, p95: 12.3 });
    expect(parseEndpoints({})).toEqual([]);
    expect(parseEndpoints(null)).toEqual([]);
  });

  it('folds endpoint events in: figures replace, a new endpoint appears, a deletion removes', () => {
    const state = new EndpointsState();
    state.set(parseEndpoints({ endpoints: [LISTED] }));
    // an event's figures: containers is a count there (Endpoints.figures)
    const changed = state.apply({
      type: 'endpoint',
      name: 'predict',
      endpoint: { ...LISTED, containers: 0, starting: 1, queued: 3, requests: 8, p50_ms: null, p95_ms: null }
    });
    expect(changed).toBe(true);
    const e = state.endpoints.get('predict')!;
    expect(e).toMatchObject({ running: 0, starting: 1, queued: 3, requests: 8, p50: null });
    expect(describeContainers(e)).toBe('0 running · 1 starting · 3 queued');

    state.apply({ type: 'endpoint', name: 'embed', endpoint: { name: 'embed', path: 'cellhop/endpoints/embed/', containers: 2 } });
    expect(state.rows().map(r => r.name)).toEqual(['embed', 'predict']);

    expect(state.apply({ type: 'endpoint', name: 'predict', deleted: true })).toBe(true);
    expect(state.rows().map(r => r.name)).toEqual(['embed']);
    expect(state.apply({ type: 'endpoint', name: 'predict', deleted: true })).toBe(false); // already gone
    expect(state.apply({ type: 'run', name: 'embed', deleted: true } as never)).toBe(false);
    expect(state.rows().map(r => r.name)).toEqual(['embed']);
  });

  it('keeps the last start error until a container runs', () => {
    const state = new EndpointsState();
    state.set(parseEndpoints({ endpoints: [{ ...LISTED, containers: [], last_error: 'GpuRequestError: no H100' }] }));
    state.apply({ type: 'endpoint', name: 'predict', endpoint: { ...LISTED, containers: 0, queued: 1 } });
    expect(state.endpoints.get('predict')!.lastError).toBe('GpuRequestError: no H100');
    state.apply({ type: 'endpoint', name: 'predict', endpoint: { ...LISTED, containers: 1 } });
    expect(state.endpoints.get('predict')!.lastError).toBeNull();
  });
});

describe('endpoints wording', () => {
  it('says the traffic and latency', () => {
    const [e] = parseEndpoints({ endpoints: [LISTED] });
    expect(describeContainers(e)).toBe('1 running');
    expect(describeTraffic(e)).toBe('1 in flight · 0.5 req/s · p50 1.5 ms · p95 12 ms · 5 requests · 0 errors');
    expect(formatLatency(null)).toBe('–');
    expect(formatLatency(0.43)).toBe('0.43 ms');
    expect(formatLatency(2500)).toBe('2.5 s');
  });

  it('makes the URL under the base URL and the logs of each container', () => {
    expect(endpointUrl('http://h:8888/user/ann/', 'cellhop/endpoints/predict/')).toBe('http://h:8888/user/ann/cellhop/endpoints/predict/');
    expect(logsText({ name: 'p', logs: { abcdef1234: 'hello\n' } })).toBe('── container abcdef12 ──\nhello\n');
    expect(logsText({ name: 'p', logs: {} })).toMatch(/no container/);
  });
});
