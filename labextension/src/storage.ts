/**
 * The Volumes and Secrets sections' data: listings parsed, breadcrumb paths, usage fractions
 * and form checks that mirror what the server accepts (server_ext/volume_paths.py and
 * server_ext/secrets.py). Pure, like state.ts: no DOM, no network.
 */

/** A volume as `GET volumes` gives it. */
export interface VolumeInfo {
  name: string;
  created: number | null;
  quota: number | null;
  usage: number;
  mountedBy: { container: string; owner: string; path: string; read_only: boolean }[];
}

/** An entry of `GET volumes/{name}/files`. */
export interface VolumeEntry {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'link';
  size: number;
  modified: number | null;
}

/** `GET volumes/{name}/usage`. */
export interface VolumeUsage {
  bytes: number;
  files: number;
  quota: number | null;
}

/** A secret as `GET secrets` gives it: its name and keys, never a value. */
export interface SecretInfo {
  name: string;
  keys: string[];
  created: number | null;
  session: boolean;
}

export interface Crumb {
  label: string;
  /** The folder's path inside the volume ('' is its root). */
  path: string;
}

function num(value: unknown): number | null {
  return typeof value === 'number' && isFinite(value) ? value : null;
}

/** The array under `key` of a JSON answer, or none. */
function itemsOf(body: unknown, key: string): any[] {
  const items = (body as Record<string, unknown> | null)?.[key];
  return Array.isArray(items) ? items : [];
}

/** `{"volumes": [...]}` as rows, by name; items without a name are dropped. */
export function parseVolumes(body: unknown): VolumeInfo[] {
  return itemsOf(body, 'volumes')
    .filter(v => v && typeof v.name === 'string')
    .map(v => ({
      name: v.name as string,
      created: num(v.created),
      quota: num(v.quota),
      usage: num(v.usage) ?? 0,
      mountedBy: Array.isArray(v.mounted_by) ? v.mounted_by : []
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** `{"entries": [...]}` as rows: folders first, then by name. Unknown types count as files. */
export function parseEntries(body: unknown): VolumeEntry[] {
  const rank = { dir: 0, link: 1, file: 2 };
  return itemsOf(body, 'entries')
    .filter(e => e && typeof e.name === 'string' && typeof e.path === 'string')
    .map(e => ({
      name: e.name as string,
      path: e.path as string,
      type: (e.type === 'dir' || e.type === 'link' ? e.type : 'file') as VolumeEntry['type'],
      size: num(e.size) ?? 0,
      modified: num(e.modified)
    }))
    .sort((a, b) => rank[a.type] - rank[b.type] || a.name.localeCompare(b.name));
}

/** `GET volumes/{name}/usage` with missing numbers as 0 / null. */
export function parseUsage(body: unknown): VolumeUsage {
  const b = (body ?? {}) as Record<string, unknown>;
  return { bytes: num(b.bytes) ?? 0, files: num(b.files) ?? 0, quota: num(b.quota) };
}

/** `{"secrets": [...]}` as rows, by name, keys sorted. Any `values` field is never read. */
export function parseSecrets(body: unknown): SecretInfo[] {
  return itemsOf(body, 'secrets')
    .filter(s => s && typeof s.name === 'string')
    .map(s => ({
      name: s.name as string,
      keys: Array.isArray(s.keys) ? (s.keys.filter((k: unknown) => typeof k === 'string') as string[]).sort() : [],
      created: num(s.created),
      session: Boolean(s.session)
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** A folder path without leading, trailing or doubled slashes ('/a//b/' -> 'a/b'). */
export function normalizeFolder(path: string): string {
  return path
    .split('/')
    .filter(p => p && p !== '.')
    .join('/');
}

/** 'a/b' + 'c.txt' -> 'a/b/c.txt'; '' + 'c.txt' -> 'c.txt'. */
export function joinPath(folder: string, name: string): string {
  const f = normalizeFolder(folder);
  return f ? `${f}/${name}` : name;
}

/** The folder holding `path` ('a/b/c' -> 'a/b', 'c' -> ''). */
export function parentPath(path: string): string {
  const parts = normalizeFolder(path).split('/').filter(Boolean);
  return parts.slice(0, -1).join('/');
}

/** The breadcrumb of folder `path` in volume `volume`: the root, then each folder down to it. */
export function breadcrumbs(volume: string, path: string): Crumb[] {
  const crumbs: Crumb[] = [{ label: volume, path: '' }];
  const parts = normalizeFolder(path).split('/').filter(Boolean);
  parts.forEach((part, i) => crumbs.push({ label: part, path: parts.slice(0, i + 1).join('/') }));
  return crumbs;
}

/** Used / quota as 0..1 (null without a quota); over the quota reads 1. */
export function usageFraction(used: number | null | undefined, quota: number | null | undefined): number | null {
  if (quota === null || quota === undefined || !isFinite(quota) || quota <= 0) {
    return null;
  }
  return Math.min(1, Math.max(0, (used ?? 0) / quota));
}

/** How many bytes past its quota the volume would be after writing `size` bytes (0: it fits, or no quota). */
export function quotaExcess(usage: VolumeUsage | null, size: number, replaces = 0): number {
  if (!usage || usage.quota === null) {
    return 0;
  }
  return Math.max(0, usage.bytes - replaces + size - usage.quota);
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Why `name` is not a volume (or secret) name the server accepts; null when it is. */
export function nameError(name: string, what: 'volume' | 'secret' = 'volume'): string | null {
  if (!name) {
    return `give the ${what} a name`;
  }
  if (!NAME.test(name) || name.endsWith('.')) {
    return `${what} name '${name}' is not allowed; use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit`;
  }
  return null;
}

/** Why a file called `name` cannot be uploaded as one path component; null when it can. */
export function fileNameError(name: string): string | null {
  if (!name || name === '.' || name === '..') {
    return `'${name}' is not a file name`;
  }
  if (name.includes('/') || /[\x00-\x1f\x7f\\]/.test(name)) {
    return `file name '${name}' contains a slash, a backslash or a control character; rename it`;
  }
  if (new TextEncoder().encode(name).length > 255) {
    return `file name '${name.slice(0, 40)}…' is longer than 255 bytes`;
  }
  return null;
}

const KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const RESERVED_PREFIXES = ['CELLHOP_', 'JPY_'];
const RESERVED = new Set([
  'CUDA_VISIBLE_DEVICES',
  'NVIDIA_VISIBLE_DEVICES',
  'PATH',
  'PYTHONPATH',
  'PYTHONHOME',
  'LD_PRELOAD',
  'LD_LIBRARY_PATH',
  'IPYTHONDIR',
  'MPLCONFIGDIR',
  'HOME'
]);

/** Why `key` is not a secret key the server accepts (an environment variable name, not reserved). */
export function secretKeyError(key: string): string | null {
  if (!KEY.test(key)) {
    return `key '${key}' is not an environment variable name; use letters, digits and '_', not starting with a digit (e.g. HF_TOKEN)`;
  }
  if (RESERVED.has(key) || RESERVED_PREFIXES.some(p => key.startsWith(p))) {
    return `key '${key}' is reserved (cellhop or the container's runtime sets it); pick another name`;
  }
  return null;
}

export interface SecretRow {
  key: string;
  value: string;
}

export type SecretForm = { ok: true; name: string; values: Record<string, string> } | { ok: false; error: string };

/**
 * The secret form's name and KEY / VALUE rows as a POST body's name and values, or the first
 * problem in words (never quoting a value). Rows with neither key nor value are skipped.
 */
export function checkSecretForm(name: string, rows: SecretRow[]): SecretForm {
  const trimmed = name.trim();
  const bad = nameError(trimmed, 'secret');
  if (bad) {
    return { ok: false, error: bad };
  }
  const values: Record<string, string> = {};
  for (const row of rows) {
    const key = row.key.trim();
    if (!key && !row.value) {
      continue;
    }
    if (!key) {
      return { ok: false, error: 'a value has no key; give each value a KEY' };
    }
    const keyBad = secretKeyError(key);
    if (keyBad) {
      return { ok: false, error: keyBad };
    }
    if (key in values) {
      return { ok: false, error: `key '${key}' is given twice` };
    }
    if (row.value.includes('\x00')) {
      return { ok: false, error: `the value of ${key} contains a NUL byte, which an environment variable cannot hold` };
    }
    values[key] = row.value;
  }
  if (!Object.keys(values).length) {
    return { ok: false, error: 'a secret needs at least one KEY and VALUE' };
  }
  return { ok: true, name: trimmed, values };
}

/** The create-volume form's body: `{"name", "quota"}` (quota left out when empty), or the problem. */
export function checkVolumeForm(
  name: string,
  quota: string
): { ok: true; body: { name: string; quota?: string } } | { ok: false; error: string } {
  const trimmed = name.trim();
  const bad = nameError(trimmed);
  if (bad) {
    return { ok: false, error: bad };
  }
  const q = quota.trim();
  if (q && !/^\d+(\.\d+)?\s*([kmgtp]?)(i?b?)$/i.test(q)) {
    return { ok: false, error: `quota '${q}' is not a size; write e.g. 500M, 10G or 1T (or leave it empty)` };
  }
  return { ok: true, body: q ? { name: trimmed, quota: q } : { name: trimmed } };
}
