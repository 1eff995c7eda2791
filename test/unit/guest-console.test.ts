import { describe, expect, test } from 'vitest';
import { parseGuestConsole } from '../e2e/console.js';

describe('guest console parsing', () => {
  const N = '0123abcd';
  const cases: [string, string, number | undefined, string][] = [
    ['plain', `SeaBIOS\r\n@@VDX-BEGIN ${N}@@\r\nhello\r\n@@VDX-END ${N} rc=0@@\r\n[ 1.0] reboot`, 0, 'hello\n'],
    ['status', `@@VDX-BEGIN ${N}@@\nx\n@@VDX-END ${N} rc=3@@\n`, 3, 'x\n'],
    ['no newline before end', `@@VDX-BEGIN ${N}@@\npartial@@VDX-END ${N} rc=1@@`, 1, 'partial'],
    ['never began', 'Kernel panic - not syncing', undefined, ''],
    ['began, never ended', `@@VDX-BEGIN ${N}@@\nhalf`, undefined, 'half'],
    ['forged end with another nonce', `@@VDX-BEGIN ${N}@@\n@@VDX-END ffff rc=0@@\nmore\n@@VDX-END ${N} rc=2@@`, 2, '@@VDX-END ffff rc=0@@\nmore\n'],
    ['other boot in the log', `@@VDX-BEGIN old@@\nold\n@@VDX-END old rc=0@@\n`, undefined, ''],
  ];
  for (const [name, text, status, output] of cases) {
    test(name, () => {
      const r = parseGuestConsole(text, N);
      expect(r.status).toBe(status);
      expect(r.output).toBe(output);
    });
  }
});
