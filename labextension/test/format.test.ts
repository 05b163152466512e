import { describe, expect, it } from 'vitest';

import { describeItem, formatAge, formatBytes, formatReading, itemName, sparklineArea, sparklinePath } from '../src/format';

describe('format', () => {
  it('formats bytes', () => {
    expect(formatBytes(null)).toBe('–');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(80 * 2 ** 30)).toBe('80.0 GiB');
    expect(formatBytes(150 * 2 ** 20)).toBe('150 MiB');
  });

  it('formats ages', () => {
    expect(formatAge(-3)).toBe('0 s');
    expect(formatAge(42.7)).toBe('42 s');
    expect(formatAge(185)).toBe('3 min');
    expect(formatAge(3600 * 2 + 300)).toBe('2 h 5 min');
    expect(formatAge(86400 * 3)).toBe('3 d');
  });

  it('formats readings the card may not give', () => {
    expect(formatReading(undefined, ' W')).toBe('–');
    expect(formatReading(61.4, ' °C')).toBe('61 °C');
  });

  it('draws sparklines right-aligned, scaled, with gaps', () => {
    expect(sparklinePath([], 100, 20, 100, 10)).toBe('');
    // 3 values in a span of 5: they take the last three slots (x = 50, 75, 100)
    expect(sparklinePath([0, 50, 100], 100, 20, 100, 5)).toBe('M50.0 20.0 L75.0 10.0 L100.0 0.0');
    // a gap lifts the pen; values beyond max are clamped
    expect(sparklinePath([10, null, 200], 100, 20, 100, 3)).toBe('M0.0 18.0 L0.0 18.0 M99.0 0.0 L100.0 0.0');
    // the area under the line closes at the bottom edge; lone points have none
    expect(sparklineArea([0, 50, 100], 100, 20, 100, 5)).toBe('M50.0 20.0 L50.0 20.0 L75.0 10.0 L100.0 0.0 L100.0 20.0 Z');
    expect(sparklineArea([10, null, 200], 100, 20, 100, 3)).toBe('');
  });

  it('describes images and volumes in a line', () => {
    expect(describeItem({ name: 'torch', status: 'ready', size: 2 ** 30 })).toEqual(['torch', ' · ready · 1.0 GiB']);
    expect(describeItem({ id: 'v1' })).toEqual(['v1']);
    // an image without a name is called by what it installs, not by its hash
    expect(itemName({ key: 'a3f9c1d2e4b5f6a7', name: null, steps: ['pip install tabulate'] })).toBe('pip install tabulate');
    expect(itemName({ key: 'a3f9c1d2e4b5f6a7', name: null, steps: [] })).toBe('image a3f9c1d2e4b5');
  });
});
