// CPU masks as SPDK writes them (-m 0x3) or as lists (0,2-3). A leaf module:
// the config, the RPC schemas and the saved configuration all parse them.

/** "0x3", "3" (hex, as SPDK's -m), or a list "0,2-3" -> CPU numbers. */
export function parseCpumask(v: string): number[] {
  const bad = () => new Error(`cpumask ${v}: use a hex mask such as 0x3, or a list such as 0,2-3`);
  if (/^(0x)?[0-9a-f]+$/i.test(v) && !v.includes(',') && !v.includes('-')) {
    const m = BigInt(v.startsWith('0x') || v.startsWith('0X') ? v : `0x${v}`);
    const cpus = [...Array(1024).keys()].filter((c) => (m >> BigInt(c)) & 1n);
    if (!cpus.length) throw bad();
    return cpus;
  }
  const cpus: number[] = [];
  for (const part of v.split(',')) {
    const r = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!r) throw bad();
    const a = Number(r[1]);
    const b = r[2] === undefined ? a : Number(r[2]);
    if (b < a || b > 1023) throw bad();
    for (let c = a; c <= b; c++) cpus.push(c);
  }
  return cpus;
}

/** CPU numbers -> "0x3", the form SPDK prints. */
export function cpumaskHex(cpus: number[]): string {
  let m = 0n;
  for (const c of cpus) m |= 1n << BigInt(c);
  return `0x${m.toString(16)}`;
}
