/**
 * The shapes of cellhop's control plane API (docs/api.md), as the panel reads them.
 */

/**
 * Who holds a GPU. This user's own lease: all its holder wrote (owner, container, ...). Another Unix
 * user's (issue 20): only `user`, `since`, `idle_since` and `owner` ("user NAME"), never a container.
 */
export interface Holder {
  owner: string;
  container?: string;
  /** The Unix user holding it. */
  user?: string;
  /** Since when (epoch seconds). */
  since?: number | null;
  /** Since when its container has been idle (epoch seconds); null while it works. */
  idle_since?: number | null;
}

export interface Gpu {
  index: number;
  uuid: string;
  name?: string;
  type: string;
  memory_total: number;
  simulated: boolean;
  mig?: unknown;
  /** The Ray node (its IP) holding it; null or absent on the local runtime. */
  node?: string | null;
  holder: Holder | null;
}

/** `GET gpus`, and the `gpus` of a `hello` event. */
export interface GpusView {
  gpus: Gpu[];
  simulated: boolean;
  reason: string | null;
  driver_version: string | null;
  runtime: string;
}

export interface ContainerGpu {
  index: number;
  uuid: string;
  type: string;
  simulated: boolean;
  node?: string | null;
}

export interface ExitStatus {
  code: number | null;
  signal: number | null;
  oom: boolean;
  stopped: boolean;
  description: string;
}

export type Phase = 'queued' | 'starting' | 'ready' | 'stopping' | 'exited';

export interface Container {
  id: string;
  owner: string;
  label: string;
  phase: Phase;
  gpu_request: string;
  gpus: ContainerGpu[];
  queue_position: number | null;
  queued_seconds: number | null;
  phases: { phase: Phase; time: number }[];
  created: number;
  cpus: number | null;
  memory: number | null;
  sandboxed: boolean;
  exit: ExitStatus | null;
  /** Set once containers run images (the images issue); absent: the notebook's own environment. */
  image?: string | null;
  /** A standby container (c.Cellhop.standby): started, holding no GPU, waiting to be claimed. */
  standby?: boolean;
  /** The standby whose kernel this container took over, if it was claimed from one. */
  claimed_from?: string | null;
  /** The Ray node (its IP) it runs on; null or absent on the local runtime. */
  node?: string | null;
  /** The volumes it mounts ({name, path, read_only}). */
  volumes?: unknown[];
  /** `GET containers` (and hello): seconds a ready container has been idle; null while it works. */
  idle_seconds?: number | null;
  /** Mean GPU use (0..1) of its GPUs so far; null where no metric was sampled. */
  gpu_busy?: number | null;
  /** Why it is flagged as holding GPUs it hardly uses ("held H100 for 1.0 h at 2% busy ..."); null if not. */
  idle_holder?: string | null;
}

/** One GPU's reading; a reading the card does not give is left out. */
export interface Sample {
  uuid: string;
  utilization?: number;
  memory_used?: number;
  memory_total?: number;
  power_w?: number;
  temperature_c?: number;
  simulated?: boolean;
  processes?: { pid: number; used_memory: number }[];
}

export interface HelloEvent {
  type: 'hello';
  gpus: GpusView;
  containers: Container[];
  interval: number | null;
  paused: boolean;
}

export interface ContainerEvent {
  type: 'container';
  id: string;
  phase: Phase;
  time: number;
  container: Container;
  /** Set when the record is gone: a standby claimed by a request (which goes on under the request's id). */
  removed?: boolean;
}

export interface MetricsEvent {
  type: 'metrics';
  time: number;
  gpus: Sample[];
  error?: string;
}

export interface ErrorEvent {
  type: 'error';
  message: string;
}

/** An endpoint's figures changed (at most once a second), or it was deleted (docs/api.md, "Endpoints"). */
export interface EndpointEvent {
  type: 'endpoint';
  name: string;
  /** name, path, version, containers (a count), starting, queued, in_flight, requests, errors, retries,
   * requests_per_second, p50_ms, p95_ms. */
  endpoint?: Record<string, unknown>;
  deleted?: boolean;
}

/** Events of later issues (images, volumes) pass through as their own types. */
export interface OtherEvent {
  type: string;
  [key: string]: unknown;
}

export type CellhopEvent = HelloEvent | ContainerEvent | MetricsEvent | ErrorEvent | OtherEvent;
