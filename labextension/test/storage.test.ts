import { describe, expect, it } from 'vitest';

import {
  breadcrumbs,
  checkSecretForm,
  checkVolumeForm,
  fileNameError,
  joinPath,
  nameError,
  normalizeFolder,
  parentPath,
  parseEntries,
  parseSecrets,
  parseUsage,
  parseVolumes,
  quotaExcess,
  secretKeyError,
  usageFraction
} from '../src/storage';

describe('volume listings', () => {
  it('parses volumes by name with usage, quota and mounts', () => {
    const rows = parseVolumes({
      volumes: [
        { name: 'weights', created: 1, quota: null, usage: 10, mounted_by: [{ container: 'c1', owner: 'k', path: '/m', read_only: true }] },
        { name: 'datasets', created: 2, quota: 1024, usage: 512, mounted_by: [] },
        { nameless: true }
      ]
    });
    expect(rows.map(r => r.name)).toEqual(['datasets', 'weights']);
    expect(rows[0]).toMatchObject({ quota: 1024, usage: 512, mountedBy: [] });
    expect(rows[1].quota).toBeNull();
    expect(rows[1].mountedBy).toHaveLength(1);
    expect(parseVolumes(null)).toEqual([]);
    expect(parseVolumes({ volumes: 'x' })).toEqual([]);
  });

  it('lists folders first, then links, then files, each by name', () => {
    const rows = parseEntries({
      entries: [
        { name: 'b.txt', path: 'd/b.txt', type: 'file', size: 3, modified: 5 },
        { name: 'z', path: 'd/z', type: 'dir', size: 0, modified: 5 },
        { name: 'a.txt', path: 'd/a.txt', type: 'file', size: 1, modified: 5 },
        { name: 'l', path: 'd/l', type: 'link', size: 0, modified: 5 },
        { name: 'odd', path: 'd/odd', type: 'socket' },
        { path: 'no-name' }
      ]
    });
    expect(rows.map(r => `${r.type}:${r.name}`)).toEqual(['dir:z', 'link:l', 'file:a.txt', 'file:b.txt', 'file:odd']);
    expect(rows[3]).toEqual({ name: 'b.txt', path: 'd/b.txt', type: 'file', size: 3, modified: 5 });
    expect(rows[4]).toMatchObject({ size: 0, modified: null });
    expect(parseEntries({})).toEqual([]);
  });

  it('reads usage with missing numbers as 0 and no quota as null', () => {
    expect(parseUsage({ bytes: 5, files: 2, quota: 100 })).toEqual({ bytes: 5, files: 2, quota: 100 });
    expect(parseUsage({ bytes: 5 })).toEqual({ bytes: 5, files: 0, quota: null });
    expect(parseUsage(null)).toEqual({ bytes: 0, files: 0, quota: null });
  });
});

describe('paths and breadcrumbs', () => {
  it('joins, normalizes and climbs folder paths', () => {
    expect(joinPath('', 'a.txt')).toBe('a.txt');
    expect(joinPath('x/y', 'a.txt')).toBe('x/y/a.txt');
    expect(joinPath('/x//y/', 'a.txt')).toBe('x/y/a.txt');
    expect(normalizeFolder('./a/./b/')).toBe('a/b');
    expect(parentPath('a/b/c')).toBe('a/b');
    expect(parentPath('a')).toBe('');
    expect(parentPath('')).toBe('');
  });

  it('makes a crumb per folder, the volume first', () => {
    expect(breadcrumbs('datasets', '')).toEqual([{ label: 'datasets', path: '' }]);
    expect(breadcrumbs('datasets', 'train/images/')).toEqual([
      { label: 'datasets', path: '' },
      { label: 'train', path: 'train' },
      { label: 'images', path: 'train/images' }
    ]);
  });
});

describe('usage', () => {
  it('is a fraction of the quota, clamped, null without one', () => {
    expect(usageFraction(256, 1024)).toBe(0.25);
    expect(usageFraction(2048, 1024)).toBe(1);
    expect(usageFraction(-1, 1024)).toBe(0);
    expect(usageFraction(10, null)).toBeNull();
    expect(usageFraction(10, 0)).toBeNull();
    expect(usageFraction(null, 100)).toBe(0);
  });

  it('says how far an upload would pass the quota', () => {
    const usage = { bytes: 900, files: 1, quota: 1000 };
    expect(quotaExcess(usage, 50)).toBe(0);
    expect(quotaExcess(usage, 150)).toBe(50);
    expect(quotaExcess(usage, 150, 100)).toBe(0); // replacing a 100-byte file
    expect(quotaExcess({ bytes: 900, files: 1, quota: null }, 10 ** 12)).toBe(0);
    expect(quotaExcess(null, 10)).toBe(0);
  });
});

describe('names the server accepts', () => {
  it('checks volume and secret names as volume_paths.volume_name does', () => {
    for (const good of ['datasets', 'llama-weights', 'a', 'v1.2_x', '9lives', 'x'.repeat(63)]) {
      expect(nameError(good)).toBeNull();
    }
    for (const bad of ['', '-x', '.hidden', '_x', 'a/b', 'a b', 'x.', 'x'.repeat(64), 'é', '..']) {
      expect(nameError(bad)).not.toBeNull();
    }
    expect(nameError('a b', 'secret')).toMatch(/^secret name/);
    expect(nameError('', 'secret')).toBe('give the secret a name');
  });

  it('refuses file names that cannot be one path component', () => {
    expect(fileNameError('report.csv')).toBeNull();
    expect(fileNameError('données 2024.txt')).toBeNull();
    for (const bad of ['', '.', '..', 'a/b', 'a\\b', 'nul\x00', 'tab\tname', 'x'.repeat(256), 'é'.repeat(128)]) {
      expect(fileNameError(bad)).not.toBeNull();
    }
  });

  it('checks secret keys as environment variable names, not reserved ones', () => {
    expect(secretKeyError('HF_TOKEN')).toBeNull();
    expect(secretKeyError('_private')).toBeNull();
    expect(secretKeyError('1ABC')).toMatch(/not an environment variable name/);
    expect(secretKeyError('A-B')).toMatch(/not an environment variable name/);
    expect(secretKeyError('')).toMatch(/not an environment variable name/);
    for (const reserved of ['PATH', 'PYTHONPATH', 'LD_PRELOAD', 'CUDA_VISIBLE_DEVICES', 'CELLHOP_X', 'JPY_SESSION', 'HOME']) {
      expect(secretKeyError(reserved)).toMatch(/reserved/);
    }
  });
});

describe('the secret form', () => {
  it('turns rows into values, skipping empty rows and trimming keys', () => {
    const form = checkSecretForm(' hf ', [
      { key: ' HF_TOKEN ', value: ' s3cret with spaces ' },
      { key: '', value: '' },
      { key: 'ORG', value: '' }
    ]);
    expect(form).toEqual({ ok: true, name: 'hf', values: { HF_TOKEN: ' s3cret with spaces ', ORG: '' } });
  });

  it('says what is wrong without quoting a value', () => {
    const value = 'TOPSECRETVALUE';
    const cases: [string, { key: string; value: string }[], RegExp][] = [
      ['', [{ key: 'A', value }], /give the secret a name/],
      ['bad name', [{ key: 'A', value }], /not allowed/],
      ['ok', [{ key: '', value }], /has no key/],
      ['ok', [{ key: '9X', value }], /not an environment variable name/],
      ['ok', [{ key: 'PATH', value }], /reserved/],
      ['ok', [{ key: 'A', value }, { key: 'A', value }], /given twice/],
      ['ok', [{ key: 'A', value: value + '\x00' }], /NUL/],
      ['ok', [{ key: '', value: '' }], /at least one/]
    ];
    for (const [name, rows, why] of cases) {
      const form = checkSecretForm(name, rows);
      expect(form.ok).toBe(false);
      const error = (form as { error: string }).error;
      expect(error).toMatch(why);
      expect(error).not.toContain(value);
    }
  });

  it('parses secret listings as names and keys only', () => {
    const rows = parseSecrets({
      secrets: [
        { name: 'zeta', keys: ['B', 'A'], created: 3, session: true, values: { A: 'leak' } },
        { name: 'alpha', keys: ['X'], created: 1, session: false }
      ]
    });
    expect(rows).toEqual([
      { name: 'alpha', keys: ['X'], created: 1, session: false },
      { name: 'zeta', keys: ['A', 'B'], created: 3, session: true }
    ]);
    expect(JSON.stringify(rows)).not.toContain('leak');
    expect(parseSecrets({})).toEqual([]);
  });
});

describe('the create-volume form', () => {
  it('sends the name and the quota as typed, or leaves the quota out', () => {
    expect(checkVolumeForm(' data ', '')).toEqual({ ok: true, body: { name: 'data' } });
    expect(checkVolumeForm('data', ' 10G ')).toEqual({ ok: true, body: { name: 'data', quota: '10G' } });
    expect(checkVolumeForm('data', '1.5 GiB')).toEqual({ ok: true, body: { name: 'data', quota: '1.5 GiB' } });
    expect(checkVolumeForm('data', '4096')).toMatchObject({ ok: true });
    expect(checkVolumeForm('data', 'lots')).toMatchObject({ ok: false, error: expect.stringMatching(/not a size/) });
    expect(checkVolumeForm('-data', '')).toMatchObject({ ok: false, error: expect.stringMatching(/not allowed/) });
  });
});
