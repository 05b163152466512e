import { describe, expect, it } from 'vitest';

import { matchingLines, takeLines } from '../src/logtext';

describe('the followed log', () => {
  it('parses the complete JSON lines and keeps a partial one for later', () => {
    const first = takeLines('{"log": "a\\n"}\n{"log": "b');
    expect(first.lines).toEqual([{ log: 'a\n' }]);
    expect(first.rest).toBe('{"log": "b');
    const second = takeLines(first.rest + '"}\n\n{"exited": true}\n');
    expect(second.lines).toEqual([{ log: 'b' }, { exited: true }]);
    expect(second.rest).toBe('');
  });

  it('shows only the lines holding the search, whatever their case', () => {
    const text = 'Loading model\nstep 1 loss 0.5\nSTEP 2 loss 0.4\n';
    expect(matchingLines(text, 'step')).toBe('step 1 loss 0.5\nSTEP 2 loss 0.4');
    expect(matchingLines(text, '')).toBe(text);
    expect(matchingLines(text, 'nothing')).toBe('');
  });
});
